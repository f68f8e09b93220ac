//! `expf` over slices, bit for bit the platform's `f32::exp`, eight lanes at a time.
//!
//! Swish and softplus call `exp` once per element, and libm's `expf` is a call per
//! element that does not vectorise: 12% of an energy model's training step (its
//! Langevin searches run swish forward 60 times a step). On x86-64 Linux with FMA,
//! glibc's `expf` (2.27 and later, `__expf_fma`) is a short straight-line computation in
//! double precision: `x/ln2` split as `k/32 + r`, `2^(k/32)` from a 32-entry table,
//! `2^r` by a cubic, one rounding to `f32` at the end. The same operations in the same
//! order, fused where glibc's build fuses them, give the same double before that
//! rounding and so the same `f32`, for every input glibc sends down that path (|x| below
//! about 88); the rest (overflow, underflow, NaN, infinities) go to libm itself.
//!
//! Whether the platform's `expf` is that one is checked, not assumed: the first call
//! compares both on a few thousand inputs, and any difference (another libm, another
//! glibc, a CPU without FMA) sends every call to libm from then on.

use std::sync::OnceLock;

use super::twin::{self, Twin};

/// `2^(i/32)` as doubles, each minus `i << 47` in its bits, so that adding `k << 47`
/// (k = 32 e + i) builds `2^e 2^(i/32)` (glibc's `__exp2f_data.tab`).
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// 32 / ln 2.
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// 1.5 * 2^52: adding it rounds to an integer, which then sits in the low bits.
const SHIFT: u64 = 0x4338000000000000;
/// The cubic for `2^(r/32)`, highest power first.
const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];

/// Inputs whose top 12 bits (sign dropped) reach this leave glibc's straight path.
const SPECIAL_TOP: u32 = 0x42a;

/// Whether `x` takes glibc's straight path (|x| < 88, roughly).
#[inline(always)]
fn plain(x: f32) -> bool {
    (x.to_bits() >> 20) & 0x7ff < SPECIAL_TOP
}

/// glibc's `__expf_fma` for an `x` on its straight path, operation for operation.
#[inline(always)]
fn exp_plain(x: f32) -> f32 {
    let (inv, shift) = (f64::from_bits(INV_LN2_N), f64::from_bits(SHIFT));
    let xd = x as f64;
    let kd = inv.mul_add(xd, shift);
    let ki = kd.to_bits();
    let kd = kd - shift;
    let r = inv.mul_add(xd, -kd);
    let s = f64::from_bits(TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = f64::from_bits(C[0]).mul_add(r, f64::from_bits(C[1]));
    let r2 = r * r;
    let y = f64::from_bits(C[2]).mul_add(r, 1.0);
    (z.mul_add(r2, y) * s) as f32
}

/// Lanes handled as one block: a block with an input off the straight path goes to
/// libm whole, so the straight path stays branch-free and vectorises.
const LANES: usize = 8;

#[inline(always)]
fn exp_blocks(x: &[f32], out: &mut [f32]) {
    twin::blocks::<LANES>(x, out, plain, exp_plain, f32::exp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(x: &[f32], out: &mut [f32]) {
    exp_blocks(x, out)
}

/// Sixteen lanes a block in AVX-512 intrinsics: the compiler's code for [`exp_blocks`]
/// checks each lane with a branch and looks the table up with a gather, a third of the
/// time; here one compare checks a block and two two-table permutes and a blend look up
/// all 32 entries from registers, the same operations on the same doubles (swish's
/// forward pass over [32, 16, 16, 16] on one thread: 0.19 -> 0.10 ms).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn exp_avx512(x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    const BLOCK: usize = 16;
    let table = TABLE.as_ptr() as *const f64;
    // SAFETY: the four loads read TABLE's 32 entries; each block's loads and stores
    // stay within its 16 floats of `x` and `out`.
    unsafe {
        let tab = [0, 8, 16, 24].map(|i| _mm512_loadu_pd(table.add(i)));
        let f = |bits: u64| _mm512_set1_pd(f64::from_bits(bits));
        let (inv, shift) = (f(INV_LN2_N), f(SHIFT));
        let (c0, c1, c2, one) = (f(C[0]), f(C[1]), f(C[2]), _mm512_set1_pd(1.0));
        // Eight lanes in double precision, as `exp_plain` computes each.
        let half = |v: __m256| {
            let xd = _mm512_cvtps_pd(v);
            let kd = _mm512_fmadd_pd(inv, xd, shift);
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, shift);
            let r = _mm512_fmsub_pd(inv, xd, kd);
            // TABLE[ki % 32]: bits 0-3 pick within a pair of registers, bit 4 the pair.
            let low = _mm512_permutex2var_pd(tab[0], ki, tab[1]);
            let high = _mm512_permutex2var_pd(tab[2], ki, tab[3]);
            let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
            let t = _mm512_castpd_si512(_mm512_mask_blend_pd(upper, low, high));
            let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(c0, r, c1);
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(c2, r, one);
            _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s))
        };
        let mut xs = x.chunks_exact(BLOCK);
        let mut os = out.chunks_exact_mut(BLOCK);
        for (xb, ob) in (&mut xs).zip(&mut os) {
            let v = _mm512_loadu_ps(xb.as_ptr());
            let top = _mm512_and_si512(
                _mm512_srli_epi32::<20>(_mm512_castps_si512(v)),
                _mm512_set1_epi32(0x7ff),
            );
            if _mm512_cmplt_epu32_mask(top, _mm512_set1_epi32(SPECIAL_TOP as i32)) != 0xffff {
                twin::each(xb, ob, f32::exp);
                continue;
            }
            let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            _mm256_storeu_ps(ob.as_mut_ptr(), half(_mm512_castps512_ps256(v)));
            _mm256_storeu_ps(ob.as_mut_ptr().add(8), half(upper));
        }
        exp_blocks(xs.remainder(), os.into_remainder());
    }
}

/// libm's `expf` and the kernels.
static TWIN: Twin = Twin {
    libm: f32::exp,
    #[cfg(target_arch = "x86_64")]
    avx2: (exp_avx2, true),
    #[cfg(target_arch = "x86_64")]
    avx512: exp_avx512,
    probes,
    chosen: OnceLock::new(),
};

/// Inputs the first call checks: a sweep of [-90, 90] and the edges of each branch.
fn probes() -> Vec<f32> {
    let mut v: Vec<f32> = (0..4096)
        .map(|i| -90.0 + 180.0 * i as f32 / 4095.0)
        .collect();
    v.extend((0..1024).map(|i| f32::from_bits(0x3000_0000 + i * 0x0010_0001)));
    v.extend([
        0.0, -0.0, 1e-30, -1e-30, 87.9, -87.9, 88.0, -88.0, 88.72, -103.0,
    ]);
    v.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
    ]);
    let n = v.len().next_multiple_of(LANES);
    v.resize(n, 0.5);
    v
}

/// `out[i] = x[i].exp()`, bit for bit, vectorised where the platform's `expf` is known.
pub(crate) fn exp_into(x: &[f32], out: &mut [f32]) {
    TWIN.apply(x, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::twin::Path;

    /// Whether this machine should have glibc's FMA `expf` (x86-64 Linux with glibc, a
    /// CPU with FMA and AVX2), which the fast path must then reproduce.
    fn expected_fast() -> bool {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        {
            is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2")
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
        {
            false
        }
    }

    #[test]
    fn gives_libms_bits_on_a_million_inputs_and_every_special_one() {
        // Every 4,093rd bit pattern of all 2^32: all exponents, both signs, NaNs.
        let mut x: Vec<f32> = (0..1_049_600u64)
            .map(|i| f32::from_bits((i * 4093 % (1 << 32)) as u32))
            .collect();
        x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0]);
        x.extend((0..20_000).map(|i| -104.0 + 0.01 * i as f32));
        let mut out = vec![0.0; x.len()];
        exp_into(&x, &mut out);
        for (v, o) in x.iter().zip(&out) {
            let want = v.exp();
            assert!(
                o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                "exp({v:e}) = {o:e}, libm {want:e}"
            );
        }
        eprintln!("expf path: {:?}", TWIN.path());
    }

    #[test]
    fn the_straight_path_is_glibcs_where_it_is_taken() {
        if !expected_fast() {
            eprintln!("skipped: this platform's expf is not glibc's FMA one");
            return;
        }
        // A probe that disagreed would have sent every call to libm, hiding the error.
        assert_ne!(
            TWIN.path(),
            Path::Libm,
            "the fast path disagreed with glibc's expf"
        );
        // A wrong AVX-512 kernel would fall back to the AVX2 one unseen.
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            assert_eq!(
                TWIN.path(),
                Path::Avx512,
                "the AVX-512 kernel disagreed with glibc"
            );
        }
        // exp_plain itself (not the dispatch), on the inputs of one exponent's range
        // where a wrong constant or a lost fusion shows within a few thousand values.
        for i in 0..100_000u32 {
            let v = f32::from_bits(0x3f80_0000 + i * 83) * if i % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(exp_plain(v).to_bits(), v.exp().to_bits(), "exp({v:e})");
        }
    }

    #[test]
    fn every_float_on_the_straight_path() {
        // A constant off in its last bits, or one fusion fewer than glibc's, moves only a
        // handful of the two billion results (a lost fusion: 2), so all of them are checked.
        if !expected_fast() {
            eprintln!("skipped: this platform's expf is not glibc's FMA one");
            return;
        }
        use rayon::prelude::*;
        let (lo, hi) = (-104f32, 89f32);
        let bad: u64 = [0u32, 0x8000_0000]
            .into_par_iter()
            .flat_map(|sign| {
                (0..0x7f80_0000u32)
                    .into_par_iter()
                    .step_by(1 << 20)
                    .map(move |start| (sign, start))
            })
            .map(|(sign, start)| {
                let x: Vec<f32> = (start..start + (1 << 20))
                    .map(|b| f32::from_bits(b | sign))
                    .filter(|v| (lo..=hi).contains(v))
                    .collect();
                let mut out = vec![0.0; x.len()];
                exp_into(&x, &mut out);
                x.iter()
                    .zip(&out)
                    .filter(|(v, o)| v.exp().to_bits() != o.to_bits())
                    .count() as u64
            })
            .sum();
        assert_eq!(bad, 0);
    }
}
