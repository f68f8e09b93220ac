//! Many N(0, 1) draws at once, bit for bit those of `rand_distr`'s `StandardNormal`
//! drawn one after another from the run's generator.
//!
//! The energy model's Langevin searches draw 50,176 normals a step (60 steps a training
//! step), on one thread while the other waits: 10% of its step. Half of that was
//! rand_chacha making ChaCha8 words (3.4 GB/s here), the rest the ziggurat reading them
//! one call at a time through the generator's 4-block buffer. Here the words come from
//! the same cipher computed 16 blocks at a time in AVX-512 registers into one buffer
//! (4x rand_chacha's speed); the draws that the ziggurat's first test decides from their
//! own two words (98%) are made in a tight loop with `StandardNormal`'s own table, and
//! the others by `StandardNormal` itself reading the buffer from their first word on;
//! the generator is then moved to the first word not used. The same words in the same
//! order reach the same tests, so the draws are the same, and the generator's state
//! afterwards too: 50,176 draws in 0.11 ms instead of 0.21 (one thread).
//!
//! Without AVX-512 the words are rand_chacha's own, made in bulk (its AVX2 code, four
//! blocks at a time), in parts over rayon's threads where there are tens of thousands of
//! them and the caller is one of its workers; the draws then as above. On Zen 3 (AVX2,
//! two threads, the workers awake as in training) 50,176 draws took 0.17-0.21 ms instead
//! of 0.23-0.26 one by one. The first test four draws at a time in AVX2 (two gathers of
//! the table) was slower than the loop.
//!
//! None of that is assumed: the table is read off the sampler (a draw from a chosen
//! word reveals one entry), and the first call compares 5,000 draws both ways; any
//! difference sends every call to the one-by-one loop.

use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::Rng;

/// Words in a ChaCha block.
const BLOCK: usize = 16;
/// Blocks computed side by side, one per lane.
const LANES: usize = 16;
/// ChaCha8: four double rounds.
const DOUBLE_ROUNDS: usize = 4;
/// Below this many draws the buffer's setup costs more than it saves.
const MIN_DRAWS: usize = 256;

/// "expand 32-byte k", the cipher's first four words.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The cipher's inputs: key (the seed's words), stream (the nonce).
#[derive(Clone, Copy)]
struct Key {
    key: [u32; 8],
    stream: u64,
}

impl Key {
    fn of(rng: &Rng) -> Self {
        let seed = rng.get_seed();
        Self {
            key: std::array::from_fn(|i| {
                u32::from_le_bytes(seed[4 * i..][..4].try_into().unwrap())
            }),
            stream: rng.get_stream(),
        }
    }

    /// Blocks from `first` on, `out.len() / 256` times 16 of them: the AVX-512 kernel
    /// where [`wide`] holds, else rand_chacha's (the compiler's code for plain lane
    /// arrays in AVX2 gathered, scattered and spilled: slower than rand_chacha's).
    fn fill(&self, first: u64, out: &mut [u32]) {
        if !wide() {
            return self.fill_chacha(first, out);
        }
        for (i, chunk) in out.chunks_exact_mut(LANES * BLOCK).enumerate() {
            let at = first.wrapping_add((i * LANES) as u64);
            // SAFETY: the CPU has AVX-512F (above); `chunk` holds 256 words.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                self.sixteen(at, chunk)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (at, chunk);
        }
    }

    /// The same blocks from rand_chacha itself, in bulk: halves joined over rayon's
    /// threads while there are at least 32,768 words (a search step's 100,000: four
    /// parts). Only from a worker (training's steps run on one, the others awake): from
    /// outside the pool the join waits for a sleeping worker to wake, which cost what
    /// the split saved.
    fn fill_chacha(&self, first: u64, out: &mut [u32]) {
        if out.len() >= 1 << 15 && rayon::current_thread_index().is_some() {
            let mid = out.len() / 2 / BLOCK * BLOCK;
            let (a, b) = out.split_at_mut(mid);
            let later = first.wrapping_add((mid / BLOCK) as u64);
            rayon::join(|| self.fill_chacha(first, a), || self.fill_chacha(later, b));
            return;
        }
        let mut seed = [0u8; 32];
        for (s, k) in seed.chunks_exact_mut(4).zip(&self.key) {
            s.copy_from_slice(&k.to_le_bytes());
        }
        let mut r = Rng::from_seed(seed);
        r.set_stream(self.stream);
        r.set_word_pos(u128::from(first) * BLOCK as u128);
        rand::Rng::fill(&mut r, out);
    }

    /// Blocks `first..first + 16`, block after block, into `out`: the 16 state words in
    /// 16 registers, one block a lane.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sixteen(&self, first: u64, out: &mut [u32]) {
        use std::arch::x86_64::*;
        let splat = |v: u32| _mm512_set1_epi32(v as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        // The 64-bit block counter: low words plus the lane, a carry where they wrapped.
        let low0 = splat(first as u32);
        let low = _mm512_add_epi32(low0, lanes);
        let wrapped = _mm512_cmplt_epu32_mask(low, low0);
        let high0 = splat((first >> 32) as u32);
        let high = _mm512_mask_add_epi32(high0, wrapped, high0, splat(1));
        let k = &self.key;
        let start = [
            splat(SIGMA[0]),
            splat(SIGMA[1]),
            splat(SIGMA[2]),
            splat(SIGMA[3]),
            splat(k[0]),
            splat(k[1]),
            splat(k[2]),
            splat(k[3]),
            splat(k[4]),
            splat(k[5]),
            splat(k[6]),
            splat(k[7]),
            low,
            high,
            splat(self.stream as u32),
            splat((self.stream >> 32) as u32),
        ];
        let mut x = start;
        macro_rules! quarter {
            ($a:literal, $b:literal, $c:literal, $d:literal) => {
                x[$a] = _mm512_add_epi32(x[$a], x[$b]);
                x[$d] = _mm512_rol_epi32::<16>(_mm512_xor_si512(x[$d], x[$a]));
                x[$c] = _mm512_add_epi32(x[$c], x[$d]);
                x[$b] = _mm512_rol_epi32::<12>(_mm512_xor_si512(x[$b], x[$c]));
                x[$a] = _mm512_add_epi32(x[$a], x[$b]);
                x[$d] = _mm512_rol_epi32::<8>(_mm512_xor_si512(x[$d], x[$a]));
                x[$c] = _mm512_add_epi32(x[$c], x[$d]);
                x[$b] = _mm512_rol_epi32::<7>(_mm512_xor_si512(x[$b], x[$c]));
            };
        }
        for _ in 0..DOUBLE_ROUNDS {
            quarter!(0, 4, 8, 12);
            quarter!(1, 5, 9, 13);
            quarter!(2, 6, 10, 14);
            quarter!(3, 7, 11, 15);
            quarter!(0, 5, 10, 15);
            quarter!(1, 6, 11, 12);
            quarter!(2, 7, 8, 13);
            quarter!(3, 4, 9, 14);
        }
        let r: [__m512i; 16] = std::array::from_fn(|w| _mm512_add_epi32(x[w], start[w]));
        // Row `w` holds word `w` of the 16 blocks; the stream wants block after block: a
        // 16 x 16 transpose, pairs of words, then of pairs, then of 128-bit quarters.
        let t: [__m512i; 16] = std::array::from_fn(|i| match i % 2 {
            0 => _mm512_unpacklo_epi32(r[i], r[i + 1]),
            _ => _mm512_unpackhi_epi32(r[i - 1], r[i]),
        });
        // u[4k + m], quarter j: words 4k..4k+4 of block 4j + m.
        let u: [__m512i; 16] = std::array::from_fn(|i| {
            let (k, m) = (i / 4 * 4, i % 4);
            let (a, b) = (t[k + m / 2], t[k + 2 + m / 2]);
            match m % 2 {
                0 => _mm512_unpacklo_epi64(a, b),
                _ => _mm512_unpackhi_epi64(a, b),
            }
        });
        for m in 0..4 {
            let (a, b, c, d) = (u[m], u[4 + m], u[8 + m], u[12 + m]);
            let low = [
                _mm512_shuffle_i32x4::<0x44>(a, b),
                _mm512_shuffle_i32x4::<0x44>(c, d),
            ];
            let high = [
                _mm512_shuffle_i32x4::<0xee>(a, b),
                _mm512_shuffle_i32x4::<0xee>(c, d),
            ];
            let blocks = [
                (m, _mm512_shuffle_i32x4::<0x88>(low[0], low[1])),
                (4 + m, _mm512_shuffle_i32x4::<0xdd>(low[0], low[1])),
                (8 + m, _mm512_shuffle_i32x4::<0x88>(high[0], high[1])),
                (12 + m, _mm512_shuffle_i32x4::<0xdd>(high[0], high[1])),
            ];
            for (block, v) in blocks {
                // SAFETY: `out` holds 16 blocks of 16 words.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(block * BLOCK) as *mut _, v) };
            }
        }
    }
}

/// Whether the AVX-512 kernel makes the buffer's words here (without it rand_chacha
/// does).
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: OnceLock<bool> = OnceLock::new();
        *WIDE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A generator that hands out the words of one key's stream from a buffer, as
/// rand_chacha's would from the same position: `next_u64` takes two words, low first.
struct Words {
    key: Key,
    /// Words of the blocks from `first` on.
    buf: Vec<u32>,
    first: u64,
    /// The next word to hand out, in `buf`.
    at: usize,
}

impl Words {
    /// The stream of `rng` from its current word, with room for about `words` of them.
    fn new(rng: &Rng, words: usize) -> Self {
        let pos = rng.get_word_pos();
        let first = (pos / BLOCK as u128) as u64;
        let at = (pos % BLOCK as u128) as usize;
        let key = Key::of(rng);
        let mut buf = vec![0; (at + words).next_multiple_of(LANES * BLOCK)];
        key.fill(first, &mut buf);
        Self {
            key,
            buf,
            first,
            at,
        }
    }

    /// The word position of the next word, as rand_chacha counts them.
    fn word_pos(&self) -> u128 {
        u128::from(self.first) * BLOCK as u128 + self.at as u128
    }

    #[cold]
    fn refill(&mut self) {
        let used = (self.buf.len() / BLOCK) as u64;
        self.first = self.first.wrapping_add(used);
        self.at = 0;
        self.key.fill(self.first, &mut self.buf);
    }
}

impl RngCore for Words {
    #[inline(always)]
    fn next_u32(&mut self) -> u32 {
        if self.at >= self.buf.len() {
            self.refill();
        }
        self.at += 1;
        self.buf[self.at - 1]
    }

    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        if self.at + 2 <= self.buf.len() {
            self.at += 2;
            return u64::from(self.buf[self.at - 2]) | u64::from(self.buf[self.at - 1]) << 32;
        }
        let low = self.next_u32();
        u64::from(low) | u64::from(self.next_u32()) << 32
    }

    /// Whole words, their bytes in little-endian order, as rand_chacha fills bytes.
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(4) {
            let w = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// One by one from the generator itself.
fn one_by_one(rng: &mut Rng, out: &mut [f32]) {
    for v in out {
        *v = StandardNormal.sample(rng);
    }
}

/// Layers of the ziggurat whose edges are read (the last layer, whose outer edge is 0,
/// never accepts a draw on its first test).
const LAYERS: usize = 255;

/// A generator whose first `u64` is given, for reading the sampler's table; later words
/// (which `StandardNormal` should never ask for here) come from a counter, so that any
/// other sampler still ends.
struct First {
    bits: u64,
    calls: u64,
}

impl RngCore for First {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.calls += 1;
        match self.calls {
            1 => self.bits,
            c => c.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// The outer edges `x_i` of the ziggurat's layers, as `StandardNormal` has them, read off
/// the sampler itself: a draw in layer `i` whose uniform is `2^-51` is `2^-51 x_i`,
/// inside the next layer's edge, taken at the first test from one word. `None` if the
/// sampler did anything else.
fn edges() -> Option<&'static [f64; LAYERS]> {
    static EDGES: OnceLock<Option<[f64; LAYERS]>> = OnceLock::new();
    EDGES
        .get_or_init(|| {
            let mut edges = [0f64; LAYERS];
            for (i, e) in edges.iter_mut().enumerate() {
                // The sampler's uniform is (bits >> 12) as a float in [2, 4), minus 3.
                let mut rng = First {
                    bits: ((1u64 << 51) | 1) << 12 | i as u64,
                    calls: 0,
                };
                let x: f64 = StandardNormal.sample(&mut rng);
                *e = x * 2f64.powi(51);
                if rng.calls != 1 || !(e.is_finite() && *e > 0.0) {
                    return None;
                }
            }
            edges.windows(2).all(|w| w[0] > w[1]).then_some(edges)
        })
        .as_ref()
}

/// The draw of `StandardNormal` that starts with `bits`, where those bits alone decide
/// it (the uniform falls inside the next layer's edge, 98% of draws); the others need
/// more words.
#[inline(always)]
fn first_test(bits: u64, edges: &[f64; LAYERS]) -> Option<f64> {
    let i = (bits & 0xff) as usize;
    if i + 1 >= LAYERS {
        return None;
    }
    let u = f64::from_bits(bits >> 12 | 1024 << 52) - 3.0;
    let x = u * edges[i];
    (x.abs() < edges[i + 1]).then_some(x)
}

/// Draws from the buffered words: those the first test decides in a tight loop, the rest
/// by `StandardNormal` itself from their first word on.
fn buffered(rng: &mut Rng, out: &mut [f32], edges: &[f64; LAYERS]) {
    // Two words a draw, and a few more for the rare second tries.
    let mut words = Words::new(rng, 2 * out.len() + out.len() / 16 + 64);
    let mut k = 0;
    while k < out.len() {
        let (at, done) = first_tests(&words.buf[words.at..], &mut out[k..], edges);
        words.at += at;
        k += done;
        if let Some(o) = out.get_mut(k) {
            *o = StandardNormal.sample(&mut words);
            k += 1;
        }
    }
    rng.set_word_pos(words.word_pos());
}

/// Draws into `out` while the first test decides them from `words`; how many words and
/// draws that took. A function of its own so that its counters stay in registers.
#[inline(never)]
fn first_tests(words: &[u32], out: &mut [f32], edges: &[f64; LAYERS]) -> (usize, usize) {
    let mut pairs = words.chunks_exact(2);
    for (k, o) in out.iter_mut().enumerate() {
        let Some(w) = pairs.next() else {
            return (2 * k, k);
        };
        match first_test(u64::from(w[0]) | u64::from(w[1]) << 32, edges) {
            Some(x) => *o = x as f32,
            None => return (2 * k, k),
        }
    }
    (2 * out.len(), out.len())
}

/// The table, where the buffered draws are those of `StandardNormal` on this build
/// (checked once on a few thousand draws from an odd word position).
fn checked_edges() -> Option<&'static [f64; LAYERS]> {
    static AGREE: OnceLock<bool> = OnceLock::new();
    let edges = edges()?;
    let agree = *AGREE.get_or_init(|| {
        let mut a = super::rng(0x5eed, super::RngStream::Scratch);
        a.set_word_pos(0xffff_fff3);
        let mut b = a.clone();
        let (mut x, mut y) = (vec![0f32; 5000], vec![0f32; 5000]);
        buffered(&mut a, &mut x, edges);
        one_by_one(&mut b, &mut y);
        x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
            && a.get_word_pos() == b.get_word_pos()
    });
    agree.then_some(edges)
}

/// `out.len()` draws of `StandardNormal` as `f32`, the same numbers and the same state of
/// `rng` afterwards as drawing them one by one.
pub fn fill_standard_normal(rng: &mut Rng, out: &mut [f32]) {
    match checked_edges() {
        Some(edges) if out.len() >= MIN_DRAWS => buffered(rng, out, edges),
        _ => one_by_one(rng, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::{rng, RngStream};

    #[test]
    fn the_words_are_rand_chachas_from_any_position() {
        // Buffers of 256 words, and of 40,192 (without AVX-512: filled in parts, here
        // from outside the pool and on a worker).
        for (stream, pos, words) in [
            (0, 0, 100),
            (3, 7, 100),
            (9, 4093, 100),
            (1, (1u128 << 36) - 5, 100),
            (5, 11, 40_000),
        ] {
            let mut r = rng(17, RngStream::Training);
            r.set_stream(stream);
            r.set_word_pos(pos);
            for on_worker in [false, true] {
                let mut r = r.clone();
                let mut w = match on_worker {
                    false => Words::new(&r, words),
                    true => crate::fast::on_worker(|| Words::new(&r, words)),
                };
                // Past the first buffer, through a refill.
                for i in 0..2 * words + 3000 {
                    assert_eq!(
                        w.next_u32(),
                        r.next_u32(),
                        "word {i} from {pos} on stream {stream}"
                    );
                }
                assert_eq!(w.word_pos(), r.get_word_pos());
            }
        }
    }

    /// rand_chacha's words in bulk, in parts on rayon's threads, on every CPU (with
    /// AVX-512 the buffer takes its own kernel's, so the test above never reaches these).
    #[test]
    fn rand_chachas_words_in_parts_are_its_stream() {
        let mut r = rng(23, RngStream::Training);
        r.set_stream(4);
        let first = 1_000_003u64;
        r.set_word_pos(u128::from(first) * BLOCK as u128);
        let mut got = vec![0u32; 40_000];
        crate::fast::on_worker(|| Key::of(&r).fill_chacha(first, &mut got));
        let want: Vec<u32> = (0..got.len()).map(|_| r.next_u32()).collect();
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_diff, None);
    }

    /// On every CPU, through the buffer (the AVX-512 kernel's words or rand_chacha's).
    #[test]
    fn draws_and_the_state_after_are_those_of_one_by_one() {
        let edges = edges().expect("the ziggurat's table could not be read");
        assert!(
            checked_edges().is_some(),
            "the buffered draws were turned off"
        );
        for (n, skip) in [
            (256, 0),
            (1000, 1),
            (50_176, 3),
            (100, 5),
            (7, 0),
            (300_000, 2),
        ] {
            let mut a = rng(11, RngStream::Training);
            for _ in 0..skip {
                a.next_u32();
            }
            let (mut b, mut c) = (a.clone(), a.clone());
            let (mut x, mut y, mut z) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            one_by_one(&mut b, &mut y);
            fill_standard_normal(&mut c, &mut z);
            buffered(&mut a, &mut x, edges);
            for (got, r) in [(&z, &c), (&x, &a)] {
                let first_diff = got
                    .iter()
                    .zip(&y)
                    .position(|(p, q)| p.to_bits() != q.to_bits());
                assert_eq!(first_diff, None, "{n} draws after {skip} words");
                assert_eq!(
                    r.get_word_pos(),
                    b.get_word_pos(),
                    "{n} draws after {skip} words"
                );
            }
        }
    }
}
