//! Plain CPU loops over `f32` slices behind the custom ops of [`crate::fast::ops`]: matrix
//! products through the `gemm` crate (strided operands, so a training step copies no
//! transpose; only [`transpose`] does, for weights prepared once for many products),
//! im2col/col2im for convolutions, and batch-norm statistics.
//!
//! Everything here is row-major and contiguous unless a stride says otherwise.

use std::mem::MaybeUninit;

use super::moments;
use rayon::prelude::*;

/// A new vector of `len` elements, its chunks of `chunk` elements (the last may be
/// shorter) handed in parallel to `fill(index, chunk)`. No zeroing pass first: for the
/// large buffers of a step, `vec![0.0; len]` is a memset on the calling thread alone
/// while the other threads wait (3-4 ms of a DCGAN step at two threads).
///
/// # Safety
/// `fill` must write every element of each chunk it is given.
unsafe fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len > 0 {
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| fill(i, c));
    }
    // SAFETY: the chunks cover `len` elements, each written in full by `fill` (the
    // caller's promise).
    unsafe { out.set_len(len) };
    out
}

/// Runs `body` compiled for the widest vectors this CPU has. The crate is built for
/// baseline x86-64, so a plain loop over floats vectorises 4 lanes wide (SSE2); inlined
/// into a function that enables AVX-512 or AVX2, the same loop runs 16 or 8 lanes wide.
/// Element-wise arithmetic gives the same bits at any width: Rust never fuses a multiply
/// and an add into an FMA on its own, and each lane computes what the scalar code does.
#[inline(always)]
pub(crate) fn wide<R>(body: impl FnOnce() -> R) -> R {
    wide_with(super::packed::Isa::detect(), body)
}

/// [`wide`] for a given instruction set (`None`: baseline), for the tests.
#[inline(always)]
pub(crate) fn wide_with<R>(isa: Option<super::packed::Isa>, body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use super::packed::Isa;

        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }

        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }

        match isa.filter(|isa| isa.available()) {
            // SAFETY: the CPU has the features these functions are compiled for.
            Some(Isa::Avx512) => return unsafe { avx512(body) },
            Some(Isa::Avx2) => return unsafe { avx2(body) },
            None => {}
        }
    }
    let _ = isa;
    body()
}

/// `chunk` as initialised floats.
///
/// # Safety
/// Every element of `chunk` must have been written.
unsafe fn assume_written(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: all elements are written (the caller's promise); `MaybeUninit<f32>` has
    // the layout of `f32`.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A matrix operand: its data and (row stride, column stride) in elements.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// This operand transposed, without copying.
    pub fn transposed(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns, without copying.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

fn parallelism(m: usize, n: usize, k: usize, threads: usize) -> gemm::Parallelism {
    // Threads cost more than they bring on small products.
    if threads > 1 && m * n * k > 32 * 32 * 32 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Rows below which a product is split by columns over the threads instead of being
/// handed to gemm's own threading. With a batch of 64 rows, gemm's threads share little
/// work and wait on each other: the 64 x 6272 x 1024 products of the fully connected
/// layers ran 1.0-1.3x faster on two threads than on one; as two independent
/// single-threaded halves they run 1.6-1.9x (the project's 2-core VM; see
/// `cargo bench -p gan-core --bench gemm`). The split still wins at 128 and 256 rows (batch
/// 256, and the 128 output channels of InfoGAN's second convolution): on the AVX-512 VM,
/// 2 threads, the convolution's weight gradient 128 x 1024 x 12544 took 25.8 ms with
/// gemm's threads and 14.7 ms split, the fully connected 256 x 1024 x 6272 forward 19.5
/// and 15.2 ms; from about a thousand rows gemm's own threading is faster (6272 x 1024 x
/// 256: 11.5 against 17.0 ms).
const SPLIT_ROWS: usize = 512;

/// Columns each thread should get at least when a product is split by columns.
const SPLIT_MIN_COLS: usize = 64;

/// The one call into gemm: `dst[m, n] (+)= a[m, k] * b[k, n]`, `dst` row-major with `n`
/// columns, reading `dst` only with `accumulate`.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements (and reads with `accumulate`) and
/// alias neither operand; the operands' strides must stay inside their slices (checked by
/// the callers).
unsafe fn gemm_into(dst: *mut f32, accumulate: bool, a: Mat, b: Mat, m: usize, n: usize, k: usize) {
    count_flops(m, n, k);
    gemm_threads(dst, accumulate, a, b, (m, n, k), threads())
}

/// Operations of the products so far ([`crate::fast::product_flops`]).
pub(crate) static PRODUCT_FLOPS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Counts an `m x n x k` product: `2 m n k` operations (a multiply and an add each).
pub(crate) fn count_flops(m: usize, n: usize, k: usize) {
    let ops = 2 * (m as u64) * (n as u64) * (k as u64);
    PRODUCT_FLOPS.fetch_add(ops, std::sync::atomic::Ordering::Relaxed);
}

/// candle's thread count, read once: `candle_core::utils::get_num_threads` parses
/// /proc/cpuinfo on every call on Linux (unless `RAYON_NUM_THREADS` is set), which cost
/// 2-3% of an MLP GAN's training time when it was asked once per product.
pub(crate) fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// How [`gemm_threads`] splits an `m x n x k` product over `threads` threads: blocks of
/// `step` columns (the last one narrower), `(step, blocks)`, or `None` where gemm gets
/// the whole product.
pub(crate) fn column_split(m: usize, n: usize, k: usize, threads: usize) -> Option<(usize, usize)> {
    let parts = (n / SPLIT_MIN_COLS).min(threads);
    // Counting the blocks from their width leaves none empty: with very many threads,
    // `parts` blocks of `step` columns can overshoot `n` by a whole block.
    (threads > 1 && m < SPLIT_ROWS && parts > 1 && m * n * k > 32 * 32 * 32).then(|| {
        let step = n.div_ceil(parts);
        (step, n.div_ceil(step))
    })
}

/// [`gemm_into`] for a given number of threads.
///
/// # Safety
/// As [`gemm_into`].
unsafe fn gemm_threads(
    dst: *mut f32,
    accumulate: bool,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
    threads: usize,
) {
    if let Some((step, blocks)) = column_split(m, n, k, threads) {
        // Column blocks of `dst` and `b` are disjoint, so the parts run independently.
        let (dst, bp, ap) = (
            dst as usize,
            b.data.as_ptr() as usize,
            a.data.as_ptr() as usize,
        );
        (0..blocks).into_par_iter().for_each(|i| {
            let lo = i * step;
            let width = step.min(n - lo);
            // SAFETY: columns lo..lo + width of dst and of b lie inside what the caller
            // guarantees for the whole product.
            unsafe {
                gemm_part(
                    (dst as *mut f32).add(lo),
                    n,
                    accumulate,
                    (ap as *const f32, a.rs, a.cs),
                    ((bp as *const f32).add(lo * b.cs), b.rs, b.cs),
                    (m, width, k),
                    gemm::Parallelism::None,
                )
            }
        });
        return;
    }
    gemm_part(
        dst,
        n,
        accumulate,
        (a.data.as_ptr(), a.rs, a.cs),
        (b.data.as_ptr(), b.rs, b.cs),
        (m, n, k),
        parallelism(m, n, k, threads),
    )
}

/// gemm on raw pointers: operands as (pointer, row stride, column stride), `dst` with row
/// stride `ld`.
///
/// # Safety
/// As [`gemm_into`], for the `m x n` block this call covers.
unsafe fn gemm_part(
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    (m, n, k): (usize, usize, usize),
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ld as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// `dst[m, n] = a[m, k] * b[k, n]`, or `dst += a * b` with `accumulate`; `dst` row-major.
pub(crate) fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(dst.len() >= m * n, "gemm destination too small");
    assert!(m == 0 || k == 0 || a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(k == 0 || n == 0 || b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index the strides reach inside the slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe { gemm_into(dst.as_mut_ptr(), accumulate, a, b, m, n, k) }
}

/// A new row-major `a[m, k] * b[k, n]`, written straight into fresh memory (no zeroing
/// pass first: the product overwrites every element).
pub(crate) fn product(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the operands' extents are checked above; the destination is the vector's
    // spare capacity of m * n elements, which gemm writes in full without reading
    // (`accumulate` false), so every element is initialised before `set_len`.
    unsafe {
        gemm_into(
            out.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
            false,
            a,
            b,
            m,
            n,
            k,
        );
        out.set_len(m * n);
    }
    out
}

/// Geometry of a 2-D convolution (or of the convolution a transposed one inverts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Rows of the column matrix: `c * kh * kw`.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Whether this is the geometry of a transposed convolution of a 1x1 input without
    /// padding (a generator's projection of z to its first k x k planes): a linear
    /// layer onto the planes, whose column matrix is the output itself.
    pub fn projects(&self) -> bool {
        self.oh == 1 && self.ow == 1 && self.pad == 0 && self.h == self.kh && self.w == self.kw
    }

    /// Columns of the column matrix: `n * oh * ow`.
    pub fn cols(&self) -> usize {
        self.n * self.oh * self.ow
    }

    /// Input row `iy` read by output row `oy` through kernel row `ki`, if inside.
    #[inline]
    fn src(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < size)
    }

    /// The output pixels `o` (of `outs`) whose tap `k` reads inside `size` input pixels:
    /// `pad <= o stride + k < size + pad`.
    fn inside(&self, k: usize, size: usize, outs: usize) -> std::ops::Range<usize> {
        let lo = self.pad.saturating_sub(k).div_ceil(self.stride);
        let hi = (size + self.pad).saturating_sub(k).div_ceil(self.stride);
        lo.min(outs)..hi.clamp(lo.min(outs), outs)
    }

    /// Each kernel tap's [`TapSpan`], taps row-major.
    fn spans(&self) -> Vec<TapSpan> {
        let (pad, w) = (self.pad as isize, self.w as isize);
        (0..self.kh)
            .flat_map(|ki| (0..self.kw).map(move |kj| (ki, kj)))
            .map(|(ki, kj)| TapSpan {
                rows: self.inside(ki, self.h, self.oh),
                cols: self.inside(kj, self.w, self.ow),
                at: (ki as isize - pad) * w + kj as isize - pad,
            })
            .collect()
    }

    /// For each kernel tap `(ki, kj)` (row-major) and output pixel `(oy, ox)`: the input
    /// pixel `iy * w + ix` it reads, or `u32::MAX` where it meets padding. `kh*kw*oh*ow`
    /// entries, a few thousand for this project's layers: computed once per call, it
    /// turns im2col and col2im into a gather and a scatter over flat planes, with no
    /// per-row bounds arithmetic (which dominated on 7x7 and 14x14 images).
    fn taps(&self) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.kh * self.kw * self.oh * self.ow);
        for ki in 0..self.kh {
            for kj in 0..self.kw {
                for oy in 0..self.oh {
                    let iy = self.src(oy, ki, self.h);
                    for ox in 0..self.ow {
                        let at = match (iy, self.src(ox, kj, self.w)) {
                            (Some(iy), Some(ix)) => (iy * self.w + ix) as u32,
                            _ => u32::MAX,
                        };
                        t.push(at);
                    }
                }
            }
        }
        t
    }
}

/// `x [n, c, h, w]` to columns `[c*kh*kw, n*oh*ow]`: row `(ci, ki, kj)`, column
/// `(ni, oy, ox)` holds the input pixel that kernel tap meets at that output pixel.
///
/// Every element is written once (zero where the tap meets padding), so the matrix,
/// tens of megabytes for a 64-channel layer, gets no zeroing pass first.
pub(crate) fn im2col(x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, cols) = (g.oh * g.ow, g.cols());
    let len = g.k() * cols;
    if cols == 0 || len == 0 {
        return vec![0f32; len];
    }
    assert!(
        g.h * g.w < u32::MAX as usize,
        "image too large for the tap table"
    );
    let taps = g.taps();
    let (kk, hw) = (g.kh * g.kw, g.h * g.w);
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(cols)
        .enumerate()
        .for_each(|(r, row)| {
            let (ci, tap) = (r / kk, r % kk);
            let table = &taps[tap * p..][..p];
            for (ni, dst) in row.chunks_exact_mut(p).enumerate() {
                let plane = &x[(ni * g.c + ci) * hw..][..hw];
                for (d, &i) in dst.iter_mut().zip(table) {
                    d.write(plane.get(i as usize).copied().unwrap_or(0.0));
                }
            }
        });
    // SAFETY: each row of `cols = n * p` elements is `n` chunks of `p`, and each chunk is
    // written in full (the table has `p` entries), so all `len` elements are initialised.
    unsafe { out.set_len(len) };
    out
}

/// `x [n, c, h, w]` to patches `[n*oh*ow, c*kh*kw]`: the transpose of [`im2col`]'s
/// matrix, one row per output pixel holding the input pixels its kernel meets (zero in
/// the padding). As the left operand of a product by the kernel's transpose it gives the
/// convolution bit for bit as `W x im2col` does (gemm sums each element over `k` in the
/// same order either way), and faster where a kernel's few rows met a large column
/// matrix (a conv of DANN's forward, 8192 x 48 x 800: 3.0-3.2 ms on two threads against
/// 6.5-6.8 for 48 x 8192 x 800, each run as `gemm_threads` runs it; its weight gradient
/// `g x patches` 4.0-4.2 against `g x im2col^T` 7.4-7.8).
pub(crate) fn patches(x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, k) = (g.oh * g.ow, g.k());
    let len = g.cols() * k;
    if len == 0 {
        return Vec::new();
    }
    assert!(
        g.h * g.w < u32::MAX as usize,
        "image too large for the tap table"
    );
    let kk = g.kh * g.kw;
    // The tap table by output pixel: each patch row then reads it in order.
    let taps = transpose_u32(&g.taps(), kk, p);
    // SAFETY: chunk `ni` is image `ni`'s `p` rows of `k = c * kk` elements, each written
    // by `patch_rows`.
    unsafe { par_filled(len, p * k, |ni, chunk| patch_image(x, g, &taps, ni, chunk)) }
}

/// Image `ni`'s patch rows, `taps` the tap table by output pixel. With padding and a
/// kernel width of 3 to 5, from a zero-padded copy of the image, in which every patch
/// is runs of whole rows: the border patches (half of a 7x7 output with padding 1) no
/// longer read the table an element at a time.
fn patch_image(x: &[f32], g: &ConvGeom, taps: &[u32], ni: usize, chunk: &mut [MaybeUninit<f32>]) {
    thread_local! {
        static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if g.pad > 0 && (3..=5).contains(&g.kw) {
        let (hp, wp, hw) = (g.h + 2 * g.pad, g.w + 2 * g.pad, g.h * g.w);
        let padded_geom = ConvGeom {
            n: 1,
            h: hp,
            w: wp,
            pad: 0,
            ..*g
        };
        return PADDED.with_borrow_mut(|padded| {
            padded.clear();
            padded.resize(g.c * hp * wp, 0.0);
            let image = &x[ni * g.c * hw..][..g.c * hw];
            for (from, to) in image.chunks_exact(hw).zip(padded.chunks_exact_mut(hp * wp)) {
                for (row, src) in from.chunks_exact(g.w).enumerate() {
                    to[(row + g.pad) * wp + g.pad..][..g.w].copy_from_slice(src);
                }
            }
            patch_image(padded, &padded_geom, &[], 0, chunk)
        });
    }
    match g.kw {
        3 => patch_rows::<3>(x, g, taps, ni, chunk),
        4 => patch_rows::<4>(x, g, taps, ni, chunk),
        5 => patch_rows::<5>(x, g, taps, ni, chunk),
        _ => patch_rows::<0>(x, g, taps, ni, chunk),
    }
}

/// The size of the blocks in which gemm sums the terms of an `m x n x k` product, as
/// `gemm_threads` runs it: each element is its first block's sum (from zero, one fused
/// multiply-add per term in order), then each further block's sum added to it (gemm-common
/// 0.19, `gemm_basic_generic`: `kernel_params`' `kc`, or at most 512 terms for outputs of
/// at most 64 x 64). The micro-kernel's tile enters the block size: 64 x 6 with
/// AVX-512, 16 x 6 with AVX2 and FMA. `None` where that is not known for certain: gemm's
/// scalar kernel, its other paths (outer products, matrix-vector, small outputs) for the
/// product or one of its blocks, a last block under three terms, or threads whose column
/// blocks would be blocked differently.
pub(crate) fn depth_block(m: usize, n: usize, k: usize) -> Option<usize> {
    depth_block_on(m, n, k, threads())
}

/// [`depth_block`] for a product run on `threads` threads.
fn depth_block_on(m: usize, n: usize, k: usize, threads: usize) -> Option<usize> {
    use super::packed::Isa;
    let mr = match Isa::detect() {
        Some(Isa::Avx512) => 64,
        Some(Isa::Avx2) => 16,
        None => return None,
    };
    if m < 2 || k < 3 {
        return None;
    }
    let widths = match column_split(m, n, k, threads) {
        Some((step, blocks)) => [step, n - (blocks - 1) * step],
        None => [n, n],
    };
    let kc = |w: usize| match m <= 64 && w <= 64 {
        true => k.min(512),
        false => gemm_common::cache::kernel_params(m, w, k, mr, 6, std::mem::size_of::<f32>()).kc,
    };
    let block = kc(widths[0]);
    let last = k - (k.div_ceil(block) - 1) * block;
    let same = widths
        .iter()
        .all(|&w| kc(w) == block && w > 1 && m * w > 256);
    (same && last >= 3).then_some(block)
}

/// `[n, o, oh, ow]`: the convolution of `x` by `w` (`[o, K]`) plus `b`, bit for bit the
/// whole patch matrix's product then [`transpose_each`], from the patches of a block of
/// images at a time on each thread, multiplied while they are still in the cache. For
/// sums of any length: each block's product sums in gemm's blocks of the whole one
/// ([`depth_block`]). `None` where those are not known, or for one output channel.
pub(crate) fn patch_convolve(
    x: &[f32],
    g: &ConvGeom,
    w: &[f32],
    b: Option<&[f32]>,
    o: usize,
) -> Option<Vec<f32>> {
    let (k, p, np) = (g.k(), g.oh * g.ow, g.cols());
    let (images, last) = image_blocks(g.n);
    let whole = depth_block(np, o, k)?;
    let blocks_alike = [images, last]
        .iter()
        .all(|&i| i * p > 64 && depth_block_on(i * p, o, k, 1) == Some(whole));
    if o < 2 || !blocks_alike {
        return None;
    }
    assert_eq!(w.len(), o * k, "patch_convolve: weight and shape disagree");
    assert!(
        g.h * g.w < u32::MAX as usize,
        "image too large for the tap table"
    );
    let taps = transpose_u32(&g.taps(), g.kh * g.kw, p);
    let len = g.n * o * p;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(images * o * p)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(rows, y), (bi, dst)| {
                let nb = dst.len() / (o * p);
                rows.clear();
                rows.reserve(nb * p * k);
                y.clear();
                y.reserve(nb * p * o);
                // SAFETY: each image's `p k` patch rows are written in full by
                // `patch_image`; gemm writes all `nb p x o` entries of `y` without
                // reading them, from `rows` (`[nb p, k]`) and `w` read as its transpose.
                unsafe {
                    for (j, chunk) in rows.spare_capacity_mut()[..nb * p * k]
                        .chunks_exact_mut(p * k)
                        .enumerate()
                    {
                        patch_image(x, g, &taps, bi * images + j, chunk);
                    }
                    rows.set_len(nb * p * k);
                    gemm_part(
                        y.as_mut_ptr(),
                        o,
                        false,
                        (rows.as_ptr(), k, 1),
                        (w.as_ptr(), 1, k),
                        (nb * p, o, k),
                        gemm::Parallelism::None,
                    );
                    y.set_len(nb * p * o);
                }
                for (image, yi) in dst.chunks_exact_mut(o * p).zip(y.chunks_exact(p * o)) {
                    for (c, plane) in image.chunks_exact_mut(p).enumerate() {
                        let add = b.map_or(0.0, |b| b[c]);
                        for (d, r) in plane.iter_mut().zip(yi.chunks_exact(o)) {
                            d.write(r[c] + add);
                        }
                    }
                }
            },
        );
    count_flops(np, o, k);
    // SAFETY: every image's planes were written in full above.
    unsafe { out.set_len(len) };
    Some(out)
}

/// `dst[m, K] (+)= a[m, N*P] x patches(x)`, a convolution's weight gradient (`a` the
/// output's gradient), without the whole patch matrix: the patch rows of one block of
/// gemm's sum ([`depth_block`]) at a time, each block's product added to `dst` as gemm
/// adds the blocks of the whole product, so the bits are the whole product's. The
/// blocks (a few megabytes) stay in the cache between forming and use, where the whole
/// matrix (tens of megabytes) went out to memory and back. Returns false, doing nothing,
/// where the blocks are not known.
pub(crate) fn patch_product(
    dst: &mut [f32],
    accumulate: bool,
    a: Mat,
    x: &[f32],
    g: &ConvGeom,
    m: usize,
) -> bool {
    let (k, p, np) = (g.k(), g.oh * g.ow, g.cols());
    let Some(block) = depth_block(m, k, np) else {
        return false;
    };
    assert!(
        g.h * g.w < u32::MAX as usize,
        "image too large for the tap table"
    );
    let taps = transpose_u32(&g.taps(), g.kh * g.kw, p);
    let mut rows: Vec<f32> = Vec::new();
    for (i, from) in (0..np).step_by(block).enumerate() {
        let to = (from + block).min(np);
        let (first, images) = (from / p, (to - 1) / p + 1 - from / p);
        rows.clear();
        rows.reserve(images * p * k);
        // SAFETY: each image's `p k` chunk is written in full by `patch_image`.
        unsafe {
            rows.spare_capacity_mut()[..images * p * k]
                .par_chunks_mut(p * k)
                .enumerate()
                .for_each(|(j, chunk)| patch_image(x, g, &taps, first + j, chunk));
            rows.set_len(images * p * k);
        }
        let part = Mat {
            data: &a.data[from * a.cs..],
            ..a
        };
        let patches = Mat::rows(&rows[(from - first * p) * k..], k);
        matmul(dst, accumulate || i > 0, part, patches, m, k, to - from);
    }
    true
}

/// Image `ni`'s patch rows for [`patches`]. A patch wholly inside the image is `kh` runs
/// of `KW` pixels a row apart, copied as fixed-size arrays (DANN's 5x5 and DCGAN's 4x4
/// layers: 1.3-1.9x faster than the table); patches that meet the padding, and kernels
/// of other widths (`KW = 0`), read the tap table.
fn patch_rows<const KW: usize>(
    x: &[f32],
    g: &ConvGeom,
    taps: &[u32],
    ni: usize,
    chunk: &mut [MaybeUninit<f32>],
) {
    let (k, kk, hw) = (g.k(), g.kh * g.kw, g.h * g.w);
    let image = &x[ni * g.c * hw..][..g.c * hw];
    // Whether output row (or column) `o`'s `extent` taps all read inside `size` pixels.
    let inside = |o: usize, size: usize, extent: usize| {
        o * g.stride >= g.pad && o * g.stride + extent <= size + g.pad
    };
    for (pix, row) in chunk.chunks_exact_mut(k).enumerate() {
        let (oy, ox) = (pix / g.ow, pix % g.ow);
        if KW == g.kw && inside(oy, g.h, g.kh) && inside(ox, g.w, KW) {
            let corner = (oy * g.stride - g.pad) * g.w + ox * g.stride - g.pad;
            for (plane, dst) in image.chunks_exact(hw).zip(row.chunks_exact_mut(kk)) {
                for (ki, d) in dst.chunks_exact_mut(KW).enumerate() {
                    let src: &[f32; KW] = plane[corner + ki * g.w..][..KW].try_into().unwrap();
                    for (d, &v) in d.iter_mut().zip(src) {
                        d.write(v);
                    }
                }
            }
            continue;
        }
        let table = &taps[pix * kk..][..kk];
        for (plane, dst) in image.chunks_exact(hw).zip(row.chunks_exact_mut(kk)) {
            for (d, &i) in dst.iter_mut().zip(table) {
                d.write(plane.get(i as usize).copied().unwrap_or(0.0));
            }
        }
    }
}

fn transpose_u32(x: &[u32], rows: usize, cols: usize) -> Vec<u32> {
    (0..rows * cols)
        .map(|i| x[(i % rows) * cols + i / rows])
        .collect()
}

/// Each of `n` row-major `rows x cols` matrices transposed in place of its block, plus
/// `bias[col]` on every element of output row `col`: `[n, rows, cols]` to `[n, cols,
/// rows]`.
pub(crate) fn transpose_each(
    x: &[f32],
    n: usize,
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * rows * cols, "transpose_each: wrong size");
    // SAFETY: block `ni` is `cols` output rows of `rows` elements, each written.
    unsafe {
        par_filled(n * rows * cols, rows * cols, |ni, dst| {
            let src = &x[ni * rows * cols..][..rows * cols];
            for (c, row) in dst.chunks_exact_mut(rows).enumerate() {
                let add = bias.map_or(0.0, |b| b[c]);
                for (d, r) in row.iter_mut().zip(0..rows) {
                    d.write(src[r * cols + c] + add);
                }
            }
        })
    }
}

/// The adjoint of [`im2col`]: sums each column entry back into the input pixel it came
/// from, giving `[n, c, h, w]`. Each pixel receives its terms tap by tap in kernel order,
/// then by output pixel, as a loop over the geometry would add them.
pub(crate) fn col2im(cols: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, ncols) = (g.oh * g.ow, g.cols());
    let len = g.n * g.c * g.h * g.w;
    if len == 0 || p == 0 {
        return vec![0f32; len];
    }
    assert!(
        g.h * g.w < u32::MAX as usize,
        "image too large for the tap table"
    );
    let taps = g.taps();
    let (kk, hw) = (g.kh * g.kw, g.h * g.w);
    // Tasks of one channel and a block of images, channel by channel: a task reads each
    // of its `kk` rows of `cols` as one run of `block * p` entries, in the order of
    // memory. Plane by plane in the output's order jumped between the rows (megabytes
    // apart) every `p` entries, and ran 1.6-2x slower on DCGAN's and DANN's layers.
    let block = IMAGES_PER_TASK.min(g.n);
    let blocks = g.n.div_ceil(block);
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = out.as_mut_ptr() as usize;
    (0..g.c * blocks).into_par_iter().for_each(|task| {
        let (ci, first) = (task / blocks, task % blocks * block);
        for ni in first..(first + block).min(g.n) {
            // SAFETY: plane (ni, ci) lies inside the `len` elements reserved, and no other
            // task writes it; it is zeroed in full before it is read.
            let plane = unsafe {
                let at = (dst as *mut f32).add((ni * g.c + ci) * hw);
                at.write_bytes(0, hw);
                std::slice::from_raw_parts_mut(at, hw)
            };
            for (tap, table) in taps.chunks_exact(p).enumerate() {
                let src = &cols[(ci * kk + tap) * ncols + ni * p..][..p];
                for (&v, &i) in src.iter().zip(table) {
                    if let Some(d) = plane.get_mut(i as usize) {
                        *d += v;
                    }
                }
            }
        }
    });
    // SAFETY: the tasks cover every (image, channel) plane, each zeroed and then written.
    unsafe { out.set_len(len) };
    out
}

/// [`col2im`] of the product `w^T x cols` (`w` row-major `[depth, c kh kw]`, `cols`
/// row-major `[depth, n oh ow]`): a convolution's input gradient, or a transposed
/// convolution's forward pass. The column matrix, four to sixteen times the result, is
/// formed a block of images at a time on each thread and scattered while it is still in
/// the cache, instead of written out whole and read back; it is formed pixel-major, with
/// a tap's channels side by side, so that each of the scatter's additions is a vector of
/// `c` channels into a pixel-major copy of the image. `None` where the products would not
/// sum in order ([`super::direct::in_order`]): only there are the blocks' products the
/// whole one's bits; `None` too for fewer than 16 channels, whose additions are too
/// short to gain (the energy model's first layer, of one channel, ran slower).
pub(crate) fn col2im_of_product(
    w: &[f32],
    cols: &[f32],
    g: &ConvGeom,
    depth: usize,
) -> Option<Vec<f32>> {
    use super::direct::{in_order, sums_in_order};
    let (k, p, np, hw, kk, c) = (g.k(), g.oh * g.ow, g.cols(), g.h * g.w, g.kh * g.kw, g.c);
    let (block, last) = image_blocks(g.n);
    let blocks_in_order = [block, last]
        .iter()
        .all(|&images| sums_in_order(images * p, k, depth));
    if c < 16 || !in_order(k, np, depth) || !blocks_in_order {
        return None;
    }
    assert_eq!(
        w.len(),
        depth * k,
        "col2im_of_product: weight and shape disagree"
    );
    assert_eq!(
        cols.len(),
        depth * np,
        "col2im_of_product: columns and shape disagree"
    );
    // The weight's columns by tap, then channel.
    let mut wt = vec![0f32; depth * k];
    for (from, to) in w.chunks_exact(k).zip(wt.chunks_exact_mut(k)) {
        for (ci, taps) in from.chunks_exact(kk).enumerate() {
            for (tap, &v) in taps.iter().enumerate() {
                to[tap * c + ci] = v;
            }
        }
    }
    let spans = g.spans();
    let len = g.n * c * hw;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(block * c * hw)
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0f32; hw * c]),
            |(part, pixels), (bi, dst)| {
                let nc = dst.len() / (c * hw) * p;
                part.clear();
                part.reserve(nc * k);
                // SAFETY: `part` has room for `nc x k` entries, which gemm writes in full
                // without reading; the block's `nc` columns of `cols` (read as their
                // transpose: row stride 1, column stride `np`) start at column
                // `bi block p` and lie inside it, and `wt` is `[depth, k]`.
                unsafe {
                    gemm_part(
                        part.as_mut_ptr(),
                        k,
                        false,
                        (cols.as_ptr().add(bi * block * p), 1, np),
                        (wt.as_ptr(), k, 1),
                        (nc, k, depth),
                        gemm::Parallelism::None,
                    );
                    part.set_len(nc * k);
                }
                for (image, rows) in dst.chunks_exact_mut(c * hw).zip(part.chunks_exact(p * k)) {
                    wide(|| scatter_pixels(pixels, rows, g, &spans));
                    for (ci, plane) in image.chunks_exact_mut(hw).enumerate() {
                        for (d, px) in plane.iter_mut().zip(pixels.chunks_exact(c)) {
                            d.write(px[ci]);
                        }
                    }
                }
            },
        );
    count_flops(k, np, depth);
    // SAFETY: every image's planes were written in full above.
    unsafe { out.set_len(len) };
    Some(out)
}

/// Where a kernel tap's column entries land in an image: the output rows and columns
/// whose pixel it reads inside the image, and the offset `at` such that output pixel
/// `(oy, ox)` reads input pixel `oy stride w + ox stride + at`.
#[derive(Debug, Clone)]
struct TapSpan {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    at: isize,
}

/// One image of [`col2im_of_product`]: `pixels` (`[h w, c]`) zeroed, then each output
/// pixel's row of `rows` (`[oh ow, kh kw c]`) added tap by tap in kernel order into the
/// input pixels its taps read, `c` channels at a time. A tap meets each input pixel at
/// most once, so every pixel receives its terms in col2im's order.
#[inline(always)]
fn scatter_pixels(pixels: &mut [f32], rows: &[f32], g: &ConvGeom, spans: &[TapSpan]) {
    let (c, k) = (g.c, g.k());
    pixels.fill(0.0);
    for (tap, span) in spans.iter().enumerate() {
        for oy in span.rows.clone() {
            for ox in span.cols.clone() {
                let to = (((oy * g.w + ox) * g.stride) as isize + span.at) as usize;
                let from = &rows[(oy * g.ow + ox) * k + tap * c..][..c];
                for (d, &v) in pixels[to * c..][..c].iter_mut().zip(from) {
                    *d += v;
                }
            }
        }
    }
}

/// The blocks of images [`patch_convolve`] and [`col2im_of_product`] give each task:
/// `(images, last)`, the images of a block and of the last (narrower) one. Up to
/// [`IMAGES_PER_TASK`], fewer where the batch would not otherwise reach every thread.
fn image_blocks(n: usize) -> (usize, usize) {
    let images = IMAGES_PER_TASK
        .min(n.div_ceil(threads()))
        .clamp(1, n.max(1));
    (
        images,
        n.saturating_sub((n.div_ceil(images).max(1) - 1) * images),
    )
}

/// Images per task of [`col2im`]: enough for long runs of reads, few enough that a
/// single channel still spreads over the threads.
const IMAGES_PER_TASK: usize = 8;

/// Elements per task of the element-wise maps; arrays up to this size run on the
/// calling thread alone (candle's own chunk for its element-wise ops).
const MAP_CHUNK: usize = 16 * 1024;

/// `f` of each element of `x`, in chunks over the threads.
pub(crate) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    // SAFETY: each chunk is written element for element from `x`'s chunk at its place.
    unsafe {
        par_filled(x.len(), MAP_CHUNK, |i, o| {
            let xs = &x[i * MAP_CHUNK..][..o.len()];
            wide(|| {
                for (ov, &xv) in o.iter_mut().zip(xs) {
                    ov.write(f(xv));
                }
            })
        })
    }
}

/// `f` of each element of `x`, in place, in chunks over the threads: an activation
/// applied to a layer's fresh output, without a second tensor.
pub(crate) fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    x.par_chunks_mut(MAP_CHUNK).for_each(|c| {
        wide(|| {
            for v in c.iter_mut() {
                *v = f(*v);
            }
        })
    });
}

/// `post(v, pre(v).exp())` of each element `v` of `x`, bit for bit as [`map`] gives it,
/// with the `exp` of each block of elements taken at once by the vectorised
/// [`super::expf::exp_into`].
pub(crate) fn map_exp(
    x: &[f32],
    pre: impl Fn(f32) -> f32 + Sync + Send,
    post: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    map_through(x, pre, super::expf::exp_into, post)
}

/// `x[i].tanh()` of each element, bit for bit as [`map`] gives it, each block of
/// elements taken at once by the vectorised [`super::tanhf::tanh_into`].
pub(crate) fn map_tanh(x: &[f32]) -> Vec<f32> {
    map_through(x, |v| v, super::tanhf::tanh_into, |_, t| t)
}

/// `post(v, f(pre(v)))` of each element `v` of `x`, in chunks over the threads, `f` a
/// kernel over slices applied to blocks of 256 (the libm twins, which vectorise a block
/// where a per-element call would not).
fn map_through(
    x: &[f32],
    pre: impl Fn(f32) -> f32 + Sync + Send,
    f: fn(&[f32], &mut [f32]),
    post: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    const BLOCK: usize = 256;
    // SAFETY: each chunk is written element for element from `x`'s chunk at its place.
    unsafe {
        par_filled(x.len(), MAP_CHUNK, |i, o| {
            let xs = &x[i * MAP_CHUNK..][..o.len()];
            let (mut t, mut e) = ([0f32; BLOCK], [0f32; BLOCK]);
            for (xb, ob) in xs.chunks(BLOCK).zip(o.chunks_mut(BLOCK)) {
                let (t, e) = (&mut t[..xb.len()], &mut e[..xb.len()]);
                for (tv, &xv) in t.iter_mut().zip(xb) {
                    *tv = pre(xv);
                }
                f(t, e);
                for ((ov, &xv), &ev) in ob.iter_mut().zip(xb).zip(e.iter()) {
                    ov.write(post(xv, ev));
                }
            }
        })
    }
}

/// `f` of each pair of elements of `x` and `y` (of one length), in chunks over the threads.
pub(crate) fn map2(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    assert_eq!(
        x.len(),
        y.len(),
        "map2 of {} and {} elements",
        x.len(),
        y.len()
    );
    // SAFETY: as in `map`.
    unsafe {
        par_filled(x.len(), MAP_CHUNK, |i, o| {
            let (xs, ys) = (
                &x[i * MAP_CHUNK..][..o.len()],
                &y[i * MAP_CHUNK..][..o.len()],
            );
            wide(|| {
                for ((ov, &xv), &yv) in o.iter_mut().zip(xs).zip(ys) {
                    ov.write(f(xv, yv));
                }
            })
        })
    }
}

/// `f` of each triple of elements of `x`, `y` and `z`, in chunks over the threads.
pub(crate) fn map3(
    x: &[f32],
    y: &[f32],
    z: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    assert!(
        x.len() == y.len() && x.len() == z.len(),
        "map3 of unequal lengths"
    );
    // SAFETY: as in `map`.
    unsafe {
        par_filled(x.len(), MAP_CHUNK, |i, o| {
            let r = i * MAP_CHUNK..i * MAP_CHUNK + o.len();
            let (xs, ys, zs) = (&x[r.clone()], &y[r.clone()], &z[r]);
            wide(|| {
                for (((ov, &xv), &yv), &zv) in o.iter_mut().zip(xs).zip(ys).zip(zs) {
                    ov.write(f(xv, yv, zv));
                }
            })
        })
    }
}

/// Max pooling of `x [planes, h, w]` over `k x k` windows with stride `k` (the rows and
/// columns past the last whole window dropped): each window's largest value, the first
/// one where NaN or ties make it ambiguous (candle's rule: a later value replaces the
/// running maximum only when larger).
pub(crate) fn max_pool(x: &[f32], planes: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let (oh, ow) = (h / k, w / k);
    if planes * oh * ow == 0 {
        return Vec::new();
    }
    // SAFETY: each output plane's `oh` rows of `ow` windows are written in order.
    unsafe {
        par_filled(planes * oh * ow, oh * ow, |plane, out| {
            let src = &x[plane * h * w..][..h * w];
            for (rows, out) in src.chunks_exact(k * w).zip(out.chunks_exact_mut(ow)) {
                for (ox, d) in out.iter_mut().enumerate() {
                    let mut largest = rows[ox * k];
                    for row in rows.chunks_exact(w) {
                        for &v in &row[ox * k..][..k] {
                            if largest < v {
                                largest = v;
                            }
                        }
                    }
                    d.write(largest);
                }
            }
        })
    }
}

/// The gradient of [`max_pool`] with respect to `x`: each window's output gradient goes
/// to the first element of the window equal to its maximum `y`, as PyTorch does; all
/// other elements (and those outside every window) get zero.
pub(crate) fn max_pool_grad(
    x: &[f32],
    y: &[f32],
    grad: &[f32],
    (planes, h, w): (usize, usize, usize),
    k: usize,
) -> Vec<f32> {
    let (oh, ow) = (h / k, w / k);
    // SAFETY: each plane is zeroed in full before its windows' gradients are placed.
    unsafe {
        par_filled(planes * h * w, h * w, |plane, dx| {
            dx.iter_mut().for_each(|v| {
                v.write(0.0);
            });
            let dx = assume_written(dx);
            let src = &x[plane * h * w..][..h * w];
            let (ys, gs) = (
                &y[plane * oh * ow..][..oh * ow],
                &grad[plane * oh * ow..][..oh * ow],
            );
            for (oy, (ys, gs)) in ys.chunks_exact(ow).zip(gs.chunks_exact(ow)).enumerate() {
                for (ox, (&m, &g)) in ys.iter().zip(gs).enumerate() {
                    let corner = oy * k * w + ox * k;
                    // The first match, found by a scan from the last element back that
                    // keeps each match: no early exit, so no branch on where the
                    // maximum lies (a coin toss the predictor lost about half the time).
                    let mut at = corner;
                    for ky in (0..k).rev() {
                        let row = corner + ky * w;
                        for i in (row..row + k).rev() {
                            if src[i] == m {
                                at = i;
                            }
                        }
                    }
                    dx[at] = g;
                }
            }
        })
    }
}

/// `[a, b, p]` to `[b, a, p]`, adding `bias[a]` to every element on the way.
pub(crate) fn swap01(x: &[f32], a: usize, b: usize, p: usize, bias: Option<&[f32]>) -> Vec<f32> {
    // SAFETY: chunk `bi` is `a` runs of `p`, each written from its source run.
    unsafe {
        par_filled(a * b * p, a * p, |bi, dst| {
            for ai in 0..a {
                let add = bias.map_or(0.0, |b| b[ai]);
                let src = &x[(ai * b + bi) * p..][..p];
                for (d, s) in dst[ai * p..][..p].iter_mut().zip(src) {
                    d.write(s + add);
                }
            }
        })
    }
}

/// The transpose of a row-major `rows x cols` matrix, row-major: bands of `T` output rows
/// over the threads, each filled in `T x T` tiles that stay in cache.
pub(crate) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    assert_eq!(
        x.len(),
        rows * cols,
        "transpose: {rows} x {cols} is not the data's size"
    );
    // SAFETY: each band's rows (output rows) are written at every column `r0..r1` over
    // the tiles, which cover `0..rows`.
    unsafe {
        par_filled(rows * cols, T * rows, |band, dst| {
            let c0 = band * T;
            for r0 in (0..rows).step_by(T) {
                let r1 = (r0 + T).min(rows);
                for (c, row) in dst.chunks_mut(rows).enumerate() {
                    for (d, r) in row[r0..r1].iter_mut().zip(r0..r1) {
                        d.write(x[r * cols + c0 + c]);
                    }
                }
            }
        })
    }
}

/// Planes reduced side by side: each plane's own sum still runs element by element in
/// order (so the result is bit for bit the plain loop's), but independent chains keep the
/// adder busy where one chain waits on each addition's latency. Eight, the AVX2 kernels'
/// count (`moments`): batch norm's statistics of `[512, 64, 7, 7]` took 1.66 ms instead
/// of 2.95 (forward, two threads, Zen 3), with the images swept in order below.
const LANES: usize = moments::PLANES;

/// Planes (`n * c`) from which the reductions split the channels over the threads.
const PAR_MIN_PLANES: usize = 512;

/// For each channel `ci` of `[n, c, p]` (`p > 1`): the sum over `ni` in order of the
/// planes' reductions, where `planes(ni, ci, out)` reduces the `out.len()` planes of
/// image `ni` from channel `ci` (`LANES` at once, fewer at the end). Channels are split
/// over the threads in runs of whole blocks (so a small `c` keeps few threads busy: 32
/// channels give four tasks); each channel's additions keep their order, so the split
/// changes no bit.
fn per_channel_planes<T: Copy + Send + Default + std::ops::AddAssign>(
    n: usize,
    c: usize,
    planes: impl Fn(usize, usize, &mut [T]) + Sync,
) -> Vec<T> {
    let tasks = match n * c >= PAR_MIN_PLANES {
        true => threads(),
        false => 1,
    };
    per_channel_planes_on(n, c, tasks, planes)
}

/// [`per_channel_planes`] split over `tasks` tasks.
fn per_channel_planes_on<T: Copy + Send + Default + std::ops::AddAssign>(
    n: usize,
    c: usize,
    tasks: usize,
    planes: impl Fn(usize, usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); c];
    // Each task takes a run of whole blocks and sweeps the images in order, its channels
    // of each image one contiguous run: the prefetcher follows it, where a block's planes
    // alone (a few kilobytes an image) ended before it got going.
    let run = |(ri, o): (usize, &mut [T]), per: usize| {
        let mut part = [T::default(); LANES];
        for ni in 0..n {
            for (bi, o) in o.chunks_mut(LANES).enumerate() {
                let part = &mut part[..o.len()];
                planes(ni, ri * per + bi * LANES, part);
                for (acc, &v) in o.iter_mut().zip(part.iter()) {
                    *acc += v;
                }
            }
        }
    };
    if tasks > 1 && c > 0 {
        let per = c.div_ceil(LANES).div_ceil(tasks) * LANES;
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|t| run(t, per));
    } else {
        run((0, &mut out), c);
    }
    out
}

/// The `f64` sums over planes `ci .. ci + out.len()` of image `ni`, each plane in element
/// order from -0.0 (as `Iterator::sum` does), of `v`, or with `mean` (from channel `ci`)
/// of `(v - mean)^2`.
#[inline]
fn lane_sums(
    x: &[f32],
    (ni, ci, c, p): (usize, usize, usize, usize),
    out: &mut [f64],
    mean: Option<&[f64]>,
) {
    let base = (ni * c + ci) * p;
    let planes = &x[base..base + out.len() * p];
    let f = |q: usize, v: f32| {
        let v = v as f64;
        match mean {
            Some(m) => (v - m[q]) * (v - m[q]),
            None => v,
        }
    };
    if out.len() == LANES {
        if moments::available() {
            let mean = mean.map(|m| <&[f64; LANES]>::try_from(&m[..LANES]).expect("8 means"));
            // SAFETY: the kernels are this CPU's.
            out.copy_from_slice(&unsafe { moments::sums(planes, p, mean) });
            return;
        }
        let mut s = [-0.0f64; LANES];
        for j in 0..p {
            for (q, acc) in s.iter_mut().enumerate() {
                *acc += f(q, planes[q * p + j]);
            }
        }
        out.copy_from_slice(&s);
    } else {
        for (q, o) in out.iter_mut().enumerate() {
            *o = planes[q * p..][..p].iter().map(|&v| f(q, v)).sum::<f64>();
        }
    }
}

/// Sum over `[n, c, p]` for each `c`.
pub(crate) fn channel_sums(x: &[f32], n: usize, c: usize, p: usize) -> Vec<f32> {
    if p == 1 {
        let mut out = vec![0f64; c];
        for row in x.chunks_exact(c).take(n) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v as f64;
            }
        }
        return out.into_iter().map(|v| v as f32).collect();
    }
    per_channel_planes(n, c, |ni, ci, o: &mut [f64]| {
        lane_sums(x, (ni, ci, c, p), o, None)
    })
    .into_iter()
    .map(|v| v as f32)
    .collect()
}

/// Per-channel mean and biased variance of `[n, c, p]`, in two passes for accuracy.
pub(crate) fn channel_moments(x: &[f32], n: usize, c: usize, p: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (n * p) as f64;
    if p == 1 {
        // [n, c]: rows of channels, so accumulate whole rows (vectorises).
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for row in x.chunks_exact(c).take(n) {
            for ((s, q), &v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
                *s += v as f64;
                *q += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let var = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| ((q / count - (s / count) * (s / count)).max(0.0)) as f32)
            .collect();
        return (mean, var);
    }
    let mean: Vec<f64> = channel_sums(x, n, c, p)
        .into_iter()
        .map(|s| s as f64 / count)
        .collect();
    let var = per_channel_planes(n, c, |ni, ci, o: &mut [f64]| {
        lane_sums(x, (ni, ci, c, p), o, Some(&mean[ci..]))
    });
    (
        mean.into_iter().map(|v| v as f32).collect(),
        var.into_iter().map(|v| (v / count) as f32).collect(),
    )
}

/// Applies `f(channel, element)` in place to every element of `[n, c, p]`, in parallel.
pub(crate) fn per_channel_mut(
    x: &mut [f32],
    c: usize,
    p: usize,
    f: impl Fn(usize, &mut f32) + Sync,
) {
    if p == 1 {
        // [n, c]: whole rows, so the channel is the position in the row (no division
        // per element).
        x.par_chunks_mut(c * 16).for_each(|rows| {
            for row in rows.chunks_mut(c) {
                for (i, v) in row.iter_mut().enumerate() {
                    f(i, v)
                }
            }
        });
    } else {
        x.par_chunks_mut(p).enumerate().for_each(|(plane, chunk)| {
            let ci = plane % c;
            chunk.iter_mut().for_each(|v| f(ci, v))
        });
    }
}

/// Per channel of `[n, c, p]`: `sum(g)` and `sum(g * (x - mean))`, the two reductions of
/// batch norm's backward pass.
pub(crate) fn channel_grad_sums(
    g: &[f32],
    x: &[f32],
    mean: &[f32],
    n: usize,
    c: usize,
    p: usize,
) -> (Vec<f64>, Vec<f64>) {
    if p == 1 {
        let (mut sg, mut sgx) = (vec![0f64; c], vec![0f64; c]);
        for (gr, xr) in g.chunks_exact(c).zip(x.chunks_exact(c)).take(n) {
            for ci in 0..c {
                sg[ci] += gr[ci] as f64;
                sgx[ci] += (gr[ci] * (xr[ci] - mean[ci])) as f64;
            }
        }
        return (sg, sgx);
    }
    // Each plane summed in f32 in element order, then added to the channel's f64 total.
    let both = per_channel_planes(n, c, |ni, ci, o: &mut [Pair]| {
        let at = ((ni * c + ci) * p, ci);
        match <&mut [Pair; LANES]>::try_from(&mut *o) {
            Ok(o) => plane_grad_sums(g, x, mean, at, p, o),
            Err(_) => plane_grad_sums(g, x, mean, at, p, o),
        }
    });
    both.into_iter().map(|Pair(a, b)| (a, b)).unzip()
}

/// [`channel_grad_sums`] of `o.len()` planes from `base`, channels from `ci`: whole blocks
/// of [`LANES`] planes through the AVX2 kernels where the CPU has them, else in scalar
/// code with an array whose length the compiler knows (with four lanes that took 0.67x
/// the time of the sums through memory, one thread).
#[inline(always)]
fn plane_grad_sums<O: AsMut<[Pair]> + ?Sized>(
    g: &[f32],
    x: &[f32],
    mean: &[f32],
    (base, ci): (usize, usize),
    p: usize,
    o: &mut O,
) {
    let o = o.as_mut();
    let lanes = o.len();
    let (gs, xs, m) = (
        &g[base..base + lanes * p],
        &x[base..base + lanes * p],
        &mean[ci..ci + lanes],
    );
    if lanes == LANES && moments::available() {
        let means = <&[f32; LANES]>::try_from(m).expect("a whole block of means");
        // SAFETY: the kernels are this CPU's.
        let (a, b) = unsafe { moments::grad_sums(gs, xs, means, p) };
        for (o, (a, b)) in o.iter_mut().zip(a.into_iter().zip(b)) {
            *o = Pair(a as f64, b as f64);
        }
        return;
    }
    let mut a = [0f32; LANES];
    let mut b = [0f32; LANES];
    for j in 0..p {
        for q in 0..lanes {
            let (gv, xv) = (gs[q * p + j], xs[q * p + j]);
            a[q] += gv;
            b[q] += gv * (xv - m[q]);
        }
    }
    for q in 0..lanes {
        o[q] = Pair(a[q] as f64, b[q] as f64);
    }
}

/// Two sums carried together through [`per_channel_planes`].
#[derive(Clone, Copy, Default)]
struct Pair(f64, f64);

impl std::ops::AddAssign for Pair {
    fn add_assign(&mut self, o: Self) {
        self.0 += o.0;
        self.1 += o.1;
    }
}

/// `out = act(x * scale[c] + shift[c])` over `[n, c, p]`, with `act` a leaky ReLU of
/// `slope` (`None`: identity): batch norm's forward pass after its statistics. The loops
/// zip the channel coefficients with the data, so they vectorise.
pub(crate) fn channel_affine(
    x: &[f32],
    c: usize,
    p: usize,
    scale: &[f32],
    shift: &[f32],
    slope: Option<f32>,
) -> Vec<f32> {
    let (scale, shift) = (&scale[..c], &shift[..c]);
    // The identity is a leaky ReLU of slope 1: one branch-free select for both.
    let a = slope.unwrap_or(1.0);
    // The loops copy the slope into a local first: read through the closure's captured
    // reference it left the plane loop scalar, with a branch and a reload per element.
    let act = |u: f32, a: f32| if u > 0.0 { u } else { a * u };
    if x.is_empty() || c == 0 {
        return vec![0f32; x.len()];
    }
    // SAFETY: each chunk of the output is written element for element from the input's
    // chunk of the same place and length (rows of `c` channels, or one plane of `p`).
    unsafe {
        if p == 1 {
            par_filled(x.len(), c * 16, |i, o| {
                let slope = a;
                let xs = &x[i * c * 16..][..o.len()];
                for (orow, xrow) in o.chunks_mut(c).zip(xs.chunks(c)) {
                    for (((ov, &xv), &s), &t) in orow.iter_mut().zip(xrow).zip(scale).zip(shift) {
                        ov.write(act(xv * s + t, slope));
                    }
                }
            })
        } else {
            par_filled(x.len(), p, |plane, o| {
                let xs = &x[plane * p..][..o.len()];
                let (s, t, a) = (scale[plane % c], shift[plane % c], a);
                for (ov, &xv) in o.iter_mut().zip(xs) {
                    ov.write(act(xv * s + t, a));
                }
            })
        }
    }
}

/// `out = a[c] * g + b[c] * x + k[c]` over `[n, c, p]`: batch norm's input gradient once
/// its per-channel sums are known. Vectorises as [`channel_affine`] does.
pub(crate) fn channel_affine2(
    g: &[f32],
    x: &[f32],
    c: usize,
    p: usize,
    (a, b, k): (&[f32], &[f32], &[f32]),
) -> Vec<f32> {
    let (a, b, k) = (&a[..c], &b[..c], &k[..c]);
    if g.is_empty() || c == 0 {
        return vec![0f32; g.len()];
    }
    // SAFETY: as in `channel_affine`, each output chunk is written element for element
    // from the inputs' chunks of the same place and length.
    unsafe {
        if p == 1 {
            par_filled(g.len(), c * 16, |i, o| {
                let (gs, xs) = (&g[i * c * 16..][..o.len()], &x[i * c * 16..][..o.len()]);
                for ((orow, grow), xrow) in o.chunks_mut(c).zip(gs.chunks(c)).zip(xs.chunks(c)) {
                    let coef = a.iter().zip(b).zip(k);
                    for (((ov, &gv), &xv), ((&av, &bv), &kv)) in
                        orow.iter_mut().zip(grow).zip(xrow).zip(coef)
                    {
                        ov.write(av * gv + bv * xv + kv);
                    }
                }
            })
        } else {
            par_filled(g.len(), p, |plane, o| {
                let (gs, xs) = (&g[plane * p..][..o.len()], &x[plane * p..][..o.len()]);
                let ci = plane % c;
                let (av, bv, kv) = (a[ci], b[ci], k[ci]);
                for ((ov, &gv), &xv) in o.iter_mut().zip(gs).zip(xs) {
                    ov.write(av * gv + bv * xv + kv);
                }
            })
        }
    }
}

/// `len` values with full 24-bit mantissas over a few binades, from `seed`, for tests of
/// sums' bits: their f64 sums of squares round, so the order of the additions shows in the
/// last bits.
#[cfg(test)]
pub(crate) fn binades(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let frac = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            frac * 2f32.powi((state % 9) as i32 - 4)
        })
        .collect()
}

/// `len` deterministic values in [-1, 1) from the xorshift state `s`, for tests.
#[cfg(test)]
pub(crate) fn values(s: &mut u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            (*s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A square kernel's geometry on `[n, c, h, w]` images, for the tests.
#[cfg(test)]
pub(crate) fn geometry(
    n: usize,
    c: usize,
    (h, w): (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c,
        h,
        w,
        kh: k,
        kw: k,
        stride,
        pad,
        oh: (h + 2 * pad - k) / stride + 1,
        ow: (w + 2 * pad - k) / stride + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by column blocks on several threads equals the single-threaded one,
    /// for block widths that do not divide the columns, with and without accumulation.
    #[test]
    fn split_products_match_one_thread() {
        let (m, n, k) = (37, 203, 90);
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let (a, b) = (fill(m * k, 1), fill(k * n, 2));
        // b given transposed (column stride k) to exercise the column offset through cs.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for (bm, name) in [(Mat::rows(&b, n), "rows"), (Mat::t(&bt, k), "transposed")] {
            let start = fill(m * n, 3);
            let mut outs = Vec::new();
            for threads in [1, 3] {
                for accumulate in [false, true] {
                    let mut dst = start.clone();
                    // SAFETY: dst holds m * n elements; operands checked by their sizes.
                    unsafe {
                        gemm_threads(
                            dst.as_mut_ptr(),
                            accumulate,
                            Mat::rows(&a, k),
                            bm,
                            (m, n, k),
                            threads,
                        )
                    };
                    outs.push(dst);
                }
            }
            for (one, many) in outs[..2].iter().zip(&outs[2..]) {
                let worst = one
                    .iter()
                    .zip(many)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-4, "{name}: split product differs by {worst}");
            }
            // And the accumulated one is the plain one plus what dst held.
            let worst = outs[1]
                .iter()
                .zip(&outs[0])
                .zip(&start)
                .map(|((acc, plain), s)| (acc - plain - s).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{name}: accumulation off by {worst}");
        }
    }

    /// The convolution from blocks of patches is the whole patch matrix's product, bit for
    /// bit, for sums of up to 512 terms and of more (blocked by gemm), with and without a
    /// bias, with a narrower last block of images.
    #[test]
    fn convolutions_from_blocks_of_patches_are_the_whole_products_bits() {
        if super::super::packed::Isa::detect().is_none() {
            eprintln!("skipped: the blocked convolution runs on AVX-512 or AVX2 only");
            return;
        }
        let mut s = 0x6a09_e667_f3bc_c909u64;
        let geom = |n, c, h, k, stride, pad| geometry(n, c, (h, h + 1), k, stride, pad);
        for (g, o) in [
            (geom(19, 64, 7, 3, 1, 1), 64),
            (geom(9, 40, 12, 5, 1, 2), 24),
            (geom(13, 32, 14, 4, 2, 1), 64),
            (geom(5, 3, 28, 3, 1, 1), 16),
        ] {
            let x = values(&mut s, g.n * g.c * g.h * g.w);
            let w = values(&mut s, o * g.k());
            let b = values(&mut s, o);
            let p = g.oh * g.ow;
            let whole = patches(&x, &g);
            let y = product(
                Mat::rows(&whole, g.k()),
                Mat::t(&w, g.k()),
                g.cols(),
                o,
                g.k(),
            );
            for bias in [Some(&b[..]), None] {
                let want = transpose_each(&y, g.n, p, o, bias);
                let got = patch_convolve(&x, &g, &w, bias, o).expect("blocks known");
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?} bias {}",
                    bias.is_some()
                );
            }
        }
    }

    /// The weight gradient from blocks of patch rows is the whole product's, bit for bit,
    /// overwriting or adding, where gemm blocks its sum by `kernel_params` and where it
    /// takes 512 terms at a time (outputs of at most 64 x 64), with a shorter last block.
    #[test]
    fn weight_gradients_from_blocks_of_patches_are_the_whole_products_bits() {
        if super::super::packed::Isa::detect().is_none() {
            eprintln!("skipped: the blocked weight gradient runs on AVX-512 or AVX2 only");
            return;
        }
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let geom = |n, c, h, k, stride, pad| geometry(n, c, (h, h), k, stride, pad);
        for (g, m) in [
            (geom(30, 32, 14, 4, 2, 1), 64),
            (geom(23, 64, 7, 3, 1, 1), 64),
            (geom(40, 4, 7, 3, 1, 1), 48),
            (geom(13, 16, 12, 5, 1, 2), 100),
            (geom(3, 8, 9, 3, 2, 0), 20),
        ] {
            assert!(depth_block(m, g.k(), g.cols()).is_some(), "{g:?}");
            let x = values(&mut s, g.n * g.c * g.h * g.w);
            let a = values(&mut s, m * g.cols());
            let whole = patches(&x, &g);
            for accumulate in [false, true] {
                let start = values(&mut s, m * g.k());
                let mut want = start.clone();
                let c = Mat::rows(&whole, g.k());
                matmul(
                    &mut want,
                    accumulate,
                    Mat::rows(&a, g.cols()),
                    c,
                    m,
                    g.k(),
                    g.cols(),
                );
                let mut got = start.clone();
                assert!(patch_product(
                    &mut got,
                    accumulate,
                    Mat::rows(&a, g.cols()),
                    &x,
                    &g,
                    m
                ));
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?} accumulate {accumulate}"
                );
            }
        }
        // A single row (gemm's matrix-vector path) is left to the caller.
        assert!(depth_block(1, 64, 5000).is_none());
    }

    /// The blocked product and scatter give col2im of the whole product, bit for bit, on
    /// blocks of several sizes (a narrower last one), strides 1-3, padding and 16 to 70
    /// channels; a product that does not sum in order is left to the caller.
    #[test]
    fn col2im_of_the_product_is_col2im_of_the_whole_product_bit_for_bit() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let geom = |n, c, h, k, stride, pad| geometry(n, c, (h, h + 2), k, stride, pad);
        for (g, depth) in [
            (geom(5, 32, 14, 4, 2, 1), 64),
            (geom(9, 64, 7, 3, 1, 1), 64),
            (geom(17, 16, 9, 5, 1, 2), 40),
            (geom(4, 70, 6, 3, 3, 0), 7),
            (geom(2, 16, 10, 2, 2, 0), 300),
        ] {
            let w = values(&mut s, depth * g.k());
            let cols = values(&mut s, depth * g.cols());
            let whole = product(
                Mat::t(&w, g.k()),
                Mat::rows(&cols, g.cols()),
                g.k(),
                g.cols(),
                depth,
            );
            let want = col2im(&whole, &g);
            let got = col2im_of_product(&w, &cols, &g, depth).expect("sums in order");
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} depth {depth}"
            );
        }
        // Over 512 terms gemm sums in blocks whose size depends on the cache; one
        // channel is left to col2im.
        for (g, depth) in [
            (geom(2, 16, 6, 3, 1, 1), 600),
            (geom(3, 1, 28, 4, 2, 1), 32),
        ] {
            let w = values(&mut s, depth * g.k());
            let cols = values(&mut s, depth * g.cols());
            assert!(col2im_of_product(&w, &cols, &g, depth).is_none());
        }
    }

    /// Patches are im2col's matrix transposed and col2im is the scatter-add loop over the
    /// geometry, for strides, paddings and kernels that leave taps (or whole kernel rows
    /// and patches) in the padding, and image counts that leave a partial block of
    /// images; and the convolution's product on them (patches x W^T)
    /// is `W x im2col` bit for bit, as `ops::conv2d`'s doc promises, at the sizes of the
    /// project's layers where gemm splits and blocks.
    #[test]
    fn patches_and_col2im_follow_the_geometry_and_give_the_products_bits() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut fill = |len: usize| values(&mut s, len);
        let geom = |n, c, h, k, stride, pad| geometry(n, c, (h, h + 1), k, stride, pad);
        for g in [
            geom(2, 3, 7, 3, 2, 1),
            geom(3, 2, 9, 4, 3, 2),
            geom(1, 1, 5, 5, 1, 0),
            geom(2, 3, 9, 3, 1, 1),
            geom(2, 2, 12, 5, 1, 0),
            geom(2, 2, 4, 2, 1, 3),
            geom(1, 2, 6, 3, 2, 2),
            geom(11, 3, 5, 3, 2, 1),
        ] {
            let x = fill(g.n * g.c * g.h * g.w);
            assert_eq!(patches(&x, &g), transpose(&im2col(&x, &g), g.k(), g.cols()));
            // col2im adds each column entry into the pixel its tap reads, taps in kernel
            // order, as the plain loop over the geometry does, bit for bit.
            let cols = fill(g.k() * g.cols());
            let mut want = vec![0f32; x.len()];
            for ni in 0..g.n {
                for ci in 0..g.c {
                    for (ki, kj) in (0..g.kh).flat_map(|ki| (0..g.kw).map(move |kj| (ki, kj))) {
                        for (oy, ox) in (0..g.oh).flat_map(|oy| (0..g.ow).map(move |ox| (oy, ox))) {
                            let (iy, ix) = (oy * g.stride + ki, ox * g.stride + kj);
                            if iy < g.pad || ix < g.pad || iy - g.pad >= g.h || ix - g.pad >= g.w {
                                continue;
                            }
                            let row = (ci * g.kh + ki) * g.kw + kj;
                            let col = (ni * g.oh + oy) * g.ow + ox;
                            want[((ni * g.c + ci) * g.h + iy - g.pad) * g.w + ix - g.pad] +=
                                cols[row * g.cols() + col];
                        }
                    }
                }
            }
            let got = col2im(&cols, &g);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?}"
            );
        }
        for (g, o) in [
            (geom(64, 32, 12, 5, 1, 0), 48),
            (geom(64, 64, 14, 4, 2, 1), 128),
        ] {
            let x = fill(g.n * g.c * g.h * g.w);
            let w = fill(o * g.k());
            let (k, np) = (g.k(), g.cols());
            let by_cols = product(Mat::rows(&w, k), Mat::rows(&im2col(&x, &g), np), o, np, k);
            let pt = patches(&x, &g);
            let by_patches = product(Mat::rows(&pt, k), Mat::t(&w, k), np, o, k);
            assert!(by_cols
                .iter()
                .zip(&transpose(&by_patches, np, o))
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// A loop compiled for AVX-512 or AVX2 through `wide_with` gives the bits of the
    /// scalar code, element by element, for arithmetic with divisions, square roots,
    /// minima, clamps, float-to-integer conversions, exponent bits and NaN selects.
    #[test]
    fn wide_loops_give_the_scalar_bits() {
        use super::super::packed::Isa;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut x = values(&mut s, 4099);
        x.iter_mut().step_by(3).for_each(|v| *v *= 60.0);
        x.extend([
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            88.7,
            -1e30,
        ]);
        let f = |v: f32| {
            let a = v.abs().min(87.0);
            let n = (a * std::f32::consts::LOG2_E + 0.5) as i32;
            let r = n as f32 * 0.693_359_4 - a;
            let t = r / (2.0 + r * r) + (a * 0.5).sqrt();
            let y = v.max(0.0) + t.clamp(-3.0, 3.0) * f32::from_bits(((127 - n) as u32) << 23);
            if v.is_nan() {
                v
            } else {
                y
            }
        };
        // One element at a time through an opaque value: no vectors at all.
        let want: Vec<u32> = x
            .iter()
            .map(|&v| f(std::hint::black_box(v)).to_bits())
            .collect();
        for isa in [None, Some(Isa::Avx2), Some(Isa::Avx512)] {
            if isa.is_some_and(|isa| !isa.available()) {
                eprintln!("{isa:?}: not on this CPU, skipped");
                continue;
            }
            let got = wide_with(isa, || {
                let mut out = vec![0f32; x.len()];
                for (o, &v) in out.iter_mut().zip(&x) {
                    *o = f(v);
                }
                out
            });
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn transpose_each_transposes_every_block_and_adds_the_bias_by_output_row() {
        let (n, rows, cols) = (3, 5, 4);
        let x: Vec<f32> = (0..n * rows * cols).map(|i| i as f32).collect();
        let bias = [0.5, -1.0, 2.0, 10.0];
        let y = transpose_each(&x, n, rows, cols, Some(&bias));
        for ni in 0..n {
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        y[(ni * cols + c) * rows + r],
                        x[(ni * rows + r) * cols + c] + bias[c]
                    );
                }
            }
        }
    }

    /// The per-channel reductions, planes side by side and channels over the threads,
    /// are bit for bit the plain loops (each plane in element order, planes in image
    /// order), for channel counts that leave a partial block of lanes.
    #[test]
    #[allow(clippy::needless_range_loop)] // the reference is the plain indexed loops
    fn channel_reductions_are_the_plain_loops_bit_for_bit() {
        for (n, c, p) in [
            (3, 7, 5),
            (64, 35, 49),
            (2, 1, 196),
            (5, 16, 6),
            (9, 24, 3),
            (40, 72, 196),
        ] {
            let (x, g) = (binades(1, n * c * p), binades(2, n * c * p));
            let plane = |v: &[f32], ni: usize, ci: usize| v[(ni * c + ci) * p..][..p].to_vec();
            let (mut sum, mut var) = (vec![0f64; c], vec![0f64; c]);
            for ni in 0..n {
                for ci in 0..c {
                    sum[ci] += plane(&x, ni, ci).iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            let count = (n * p) as f64;
            let mean: Vec<f64> = sum.iter().map(|&s| s as f32 as f64 / count).collect();
            for ni in 0..n {
                for ci in 0..c {
                    let m = mean[ci];
                    var[ci] += plane(&x, ni, ci)
                        .iter()
                        .map(|&e| (e as f64 - m) * (e as f64 - m))
                        .sum::<f64>();
                }
            }
            let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            let (mut sg, mut sgx) = (vec![0f64; c], vec![0f64; c]);
            for ni in 0..n {
                for ci in 0..c {
                    let (mut a, mut b) = (0f32, 0f32);
                    for (&gv, &xv) in plane(&g, ni, ci).iter().zip(&plane(&x, ni, ci)) {
                        a += gv;
                        b += gv * (xv - mean32[ci]);
                    }
                    sg[ci] += a as f64;
                    sgx[ci] += b as f64;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let sums: Vec<f32> = sum.iter().map(|&v| v as f32).collect();
            assert_eq!(
                bits(&channel_sums(&x, n, c, p)),
                bits(&sums),
                "sums {n}x{c}x{p}"
            );
            let (m, v) = channel_moments(&x, n, c, p);
            let vars: Vec<f32> = var.iter().map(|&v| (v / count) as f32).collect();
            assert_eq!(bits(&m), bits(&mean32), "means {n}x{c}x{p}");
            assert_eq!(bits(&v), bits(&vars), "variances {n}x{c}x{p}");
            let (a, b) = channel_grad_sums(&g, &x, &mean32, n, c, p);
            assert_eq!(bits64(&a), bits64(&sg), "sum(g) {n}x{c}x{p}");
            assert_eq!(bits64(&b), bits64(&sgx), "sum(g (x - mean)) {n}x{c}x{p}");
        }
    }

    /// However many tasks share the channels (one, two, three, many: runs of whole blocks,
    /// a short last run, a partial block), each channel's total is its planes' sums added
    /// in image order.
    #[test]
    fn channel_runs_over_any_task_count_keep_the_image_order() {
        let (n, c) = (5, 2 * LANES * 3 + 3);
        let value = |ni: usize, ci: usize| 1.0 / (1 + 7 * ni + 3 * ci) as f64;
        let want: Vec<u64> = (0..c)
            .map(|ci| (0..n).fold(0.0f64, |s, ni| s + value(ni, ci)).to_bits())
            .collect();
        for tasks in [1, 2, 3, 16] {
            let got = per_channel_planes_on(n, c, tasks, |ni, ci, o: &mut [f64]| {
                for (q, v) in o.iter_mut().enumerate() {
                    *v = value(ni, ci + q);
                }
            });
            let got: Vec<u64> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{tasks} tasks");
        }
    }

    /// With more threads than columns divide evenly (70 blocks of 65 columns would
    /// overshoot 4481), every column is computed once and none is written out of range.
    #[test]
    fn split_with_very_many_threads_covers_every_column() {
        let (m, n, k) = (2, 64 * 70 + 1, 8);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 / 7.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 / 5.0 - 1.0).collect();
        let run = |threads| {
            let mut dst = vec![f32::NAN; m * n];
            // SAFETY: dst holds m * n elements; operands checked by their sizes.
            unsafe {
                gemm_threads(
                    dst.as_mut_ptr(),
                    false,
                    Mat::rows(&a, k),
                    Mat::rows(&b, n),
                    (m, n, k),
                    threads,
                )
            };
            dst
        };
        let (one, many) = (run(1), run(70));
        assert!(
            many.iter().all(|v| v.is_finite()),
            "a column was left unwritten"
        );
        let worst = one
            .iter()
            .zip(&many)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "split product differs by {worst}");
    }
}
