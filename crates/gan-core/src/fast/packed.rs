//! Matrix products against a weight packed once, for [`crate::fast::layers::inference`].
//!
//! gemm packs its right operand on every call: at batch 64 that copy of the weight costs
//! a sixth of an MLP generator's forward pass (docs/BENCHMARKS.md). A weight that stays
//! fixed for a whole section is packed here once, into panels of `nr` output columns laid
//! out as the micro-kernel reads them (`panel[kk][j] = W[p nr + j][kk]`), and every
//! product reads its input in place. The kernels are the textbook register
//! blocking (Goto and van de Geijn 2008): `mr` rows times `nr` columns of the output held
//! in registers while the sum runs over `k`, in blocks of [`Isa::kc`] steps so that the
//! panel's block stays in the L1 cache for all the row blocks that use it.
//!
//! Each output element is summed over `k` in order by one kernel, with the bias added
//! last, whatever the thread count or the split: the results are deterministic, but not
//! gemm's bits (it blocks and orders the sum differently), so training never comes here.

use rayon::prelude::*;

/// Rows of the input multiplied together (their block of [`Isa::kc`] columns stays in L2).
const MC: usize = 256;

/// The instruction set a packed weight is laid out for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    /// AVX-512F: 8 rows x 32 columns in 16 registers.
    Avx512,
    /// AVX2 + FMA: 6 rows x 16 columns in 12 registers.
    Avx2,
}

impl Isa {
    /// Output columns per panel.
    pub fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 => 16,
        }
    }

    /// Length of the block of the sum over `k` between visits to the output. AVX2 takes
    /// 256: against gemm on Zen 3 (one thread, the MLP GAN's products, whole tiles
    /// unmasked), 128 ran the 256-row products at 0.88-0.95x and 256 at 0.94-1.02x, the
    /// 64-row ones 0.83-1.1x against 1.1-1.3x (the panel's block, 16 KiB, still fits in
    /// L1). AVX-512's stays at 128, as it was tuned on Zen 5.
    fn kc(self) -> usize {
        match self {
            Isa::Avx512 => 128,
            Isa::Avx2 => 256,
        }
    }

    /// Output rows per kernel call.
    fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 => 6,
        }
    }

    /// The widest kernel this CPU runs, if any (`None`: the caller keeps gemm).
    pub fn detect() -> Option<Isa> {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") {
                    return Some(Isa::Avx512);
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Some(Isa::Avx2);
                }
            }
            None
        })
    }

    /// Whether this CPU runs this kernel.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Length of the packed form of an `n x k` weight.
pub(crate) fn packed_len(n: usize, k: usize, isa: Isa) -> usize {
    n.div_ceil(isa.nr()) * k * isa.nr()
}

/// The weight `w [n, k]` (a layer's `[out, in]`) in panels of `nr` columns, the last one
/// padded with zeros, block of [`Isa::kc`] steps of the sum by block: each block's panels
/// lie one after the other, so a product streams through memory in the order it reads
/// (the panel of block `k0` for panel `p` starts at `k0 panels nr + p kc nr`).
pub(crate) fn pack(w: &[f32], n: usize, k: usize, isa: Isa) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "packed weight: data and shape disagree");
    let nr = isa.nr();
    let panels = n.div_ceil(nr);
    let mut out = vec![0.0f32; packed_len(n, k, isa)];
    if out.is_empty() {
        return out;
    }
    let kc_max = isa.kc();
    out.par_chunks_mut(kc_max * panels * nr)
        .enumerate()
        .for_each(|(block, dst)| {
            let (k0, kc) = (block * kc_max, kc_max.min(k - block * kc_max));
            for (p, panel) in dst.chunks_mut(kc * nr).enumerate() {
                for j in 0..nr.min(n - p * nr) {
                    let row = &w[(p * nr + j) * k + k0..][..kc];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * nr + j] = v;
                    }
                }
            }
        });
    out
}

/// `x [m, k] W^T + b` with `W [n, k]` given packed ([`pack`] for the same `isa`), then
/// with `leaky = Some(a)` the leaky ReLU `v > 0 ? v : a v` of each element as it is
/// written (the same arithmetic as `ops::leaky_relu`, without a second pass).
pub(crate) fn product(
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    packed: &[f32],
    bias: &[f32],
    leaky: Option<f32>,
    isa: Isa,
) -> Vec<f32> {
    assert!(
        isa.available(),
        "packed product: {isa:?} kernels on a CPU without them"
    );
    assert_eq!(x.len(), m * k, "packed product: input and shape disagree");
    assert_eq!(
        packed.len(),
        packed_len(n, k, isa),
        "packed product: weight"
    );
    assert_eq!(bias.len(), n, "packed product: bias");
    let mut y = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    super::kernels::count_flops(m, n, k);
    let (nr, mr) = (isa.nr(), isa.mr());
    let panels = n.div_ceil(nr);
    let row_blocks = m.div_ceil(mr);
    let threads = if m * n * k > 32 * 32 * 32 {
        super::kernels::threads()
    } else {
        1
    };
    // Split the output by panels when there are enough of them, else by row blocks; every
    // element's sum is the same either way.
    let (by_panels, parts) = if panels >= threads || panels >= row_blocks {
        (true, threads.min(panels))
    } else {
        (false, threads.min(row_blocks))
    };
    let (units, yp) = (
        if by_panels { panels } else { row_blocks },
        y.as_mut_ptr() as usize,
    );
    let run = |part: usize| {
        let (lo, hi) = (part * units / parts, (part + 1) * units / parts);
        let (panels_r, rows_r) = if by_panels {
            ((lo, hi), (0, m))
        } else {
            ((0, panels), (lo * mr, (hi * mr).min(m)))
        };
        // SAFETY: parts cover disjoint panels (columns) or disjoint rows of `y`, which
        // holds m x n elements; the operands' lengths are checked above.
        unsafe {
            block(
                x,
                (m, k, n),
                packed,
                bias,
                isa,
                panels_r,
                rows_r,
                (yp as *mut f32, leaky),
            )
        }
    };
    if parts > 1 {
        (0..parts).into_par_iter().for_each(run);
    } else {
        run(0);
    }
    y
}

/// Rows `rows.0..rows.1` and panels `panels.0..panels.1` of the output.
///
/// # Safety
/// `y` must point to `m * n` writable floats that no other thread touches in this block.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    (_, k, n): (usize, usize, usize),
    packed: &[f32],
    bias: &[f32],
    isa: Isa,
    panels: (usize, usize),
    rows: (usize, usize),
    (y, leaky): (*mut f32, Option<f32>),
) {
    let (nr, mr) = (isa.nr(), isa.mr());
    let (panels_all, kc_max) = (n.div_ceil(nr), isa.kc());
    let mut edge = Vec::new();
    for r0 in (rows.0..rows.1).step_by(MC) {
        let mc = MC.min(rows.1 - r0);
        let (full, part) = (mc / mr, mc % mr);
        for k0 in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - k0);
            // The kernels read the input in place, `mr` rows at a time; the last rows of a
            // block that holds fewer are copied, zero-padded, so no kernel reads past it.
            if part > 0 {
                edge.clear();
                edge.resize(mr * kc, 0.0);
                for i in 0..part {
                    let src = &x[(r0 + full * mr + i) * k + k0..][..kc];
                    edge[i * kc..][..kc].copy_from_slice(src);
                }
            }
            let (first, last) = (k0 == 0, k0 + kc == k);
            for p in panels.0..panels.1 {
                let cols = nr.min(n - p * nr);
                let b = packed.as_ptr().add((k0 * panels_all + p * kc) * nr);
                let bias = if last {
                    bias.as_ptr().add(p * nr)
                } else {
                    std::ptr::null()
                };
                for rb in 0..full + usize::from(part > 0) {
                    let r = r0 + rb * mr;
                    let (a, lda) = match rb < full {
                        true => (x.as_ptr().add(r * k + k0), k),
                        false => (edge.as_ptr(), kc),
                    };
                    let c = y.add(r * n + p * nr);
                    let tile = Tile {
                        ldc: n,
                        rows: mr.min(rows.1 - r),
                        cols,
                        first,
                        leaky,
                    };
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => x86::kernel_avx512((a, lda), b, kc, c, bias, tile),
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => x86::kernel_avx2((a, lda), b, kc, c, bias, tile),
                        #[cfg(not(target_arch = "x86_64"))]
                        _ => unreachable!("no packed kernels off x86-64"),
                    }
                }
            }
        }
    }
    // Only reached with k == 0 and no kernel call: the output is the bias.
    if k == 0 {
        let cols = panels.0 * nr..n.min(panels.1 * nr);
        for r in rows.0..rows.1 {
            for (j, &b) in cols.clone().zip(&bias[cols.clone()]) {
                *y.add(r * n + j) = match leaky {
                    Some(a) if b <= 0.0 => a * b,
                    _ => b,
                };
            }
        }
    }
}

/// Where a kernel call writes: the output's row stride, the valid rows and columns of its
/// `mr x nr` tile, whether the tile starts from zero (else from what it holds), and the
/// leaky ReLU's slope to apply with the bias.
#[derive(Clone, Copy)]
struct Tile {
    ldc: usize,
    rows: usize,
    cols: usize,
    first: bool,
    leaky: Option<f32>,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tile;
    use std::arch::x86_64::*;

    /// 8 x 32 tile: `c (+)= a b (+ bias)`; `a` is 8 rows `lda` apart, `b` `kc` steps of 32.
    ///
    /// # Safety
    /// AVX-512F present; `a` holds 8 rows of `kc`, `b` `kc` steps; `c` the tile's valid
    /// rows and columns; `bias` null or `cols` floats. Masked lanes are never touched, so
    /// their addresses are formed with `wrapping_add` (they may lie past the output).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_avx512(
        (a, lda): (*const f32, usize),
        b: *const f32,
        kc: usize,
        c: *mut f32,
        bias: *const f32,
        t: Tile,
    ) {
        const MR: usize = 8;
        let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
        let (m0, m1) = (mask(t.cols), mask(t.cols.saturating_sub(16)));
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        if !t.first {
            for i in 0..t.rows.min(MR) {
                acc0[i] = _mm512_maskz_loadu_ps(m0, c.add(i * t.ldc));
                acc1[i] = _mm512_maskz_loadu_ps(m1, c.wrapping_add(i * t.ldc + 16));
            }
        }
        for kk in 0..kc {
            let b0 = _mm512_loadu_ps(b.add(kk * 32));
            let b1 = _mm512_loadu_ps(b.add(kk * 32 + 16));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a.add(i * lda + kk));
                acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            }
        }
        if !bias.is_null() {
            let (b0, b1) = (
                _mm512_maskz_loadu_ps(m0, bias),
                _mm512_maskz_loadu_ps(m1, bias.wrapping_add(16)),
            );
            for i in 0..MR {
                acc0[i] = _mm512_add_ps(acc0[i], b0);
                acc1[i] = _mm512_add_ps(acc1[i], b1);
            }
            if let Some(a) = t.leaky {
                let (a, zero) = (_mm512_set1_ps(a), _mm512_setzero_ps());
                let leaky = |v: __m512| {
                    let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, zero);
                    _mm512_mask_blend_ps(positive, _mm512_mul_ps(a, v), v)
                };
                for i in 0..MR {
                    acc0[i] = leaky(acc0[i]);
                    acc1[i] = leaky(acc1[i]);
                }
            }
        }
        for i in 0..t.rows.min(MR) {
            _mm512_mask_storeu_ps(c.add(i * t.ldc), m0, acc0[i]);
            _mm512_mask_storeu_ps(c.wrapping_add(i * t.ldc + 16), m1, acc1[i]);
        }
    }

    /// 6 x 16 tile, as [`kernel_avx512`] with 8-lane registers.
    ///
    /// # Safety
    /// AVX2 and FMA present; otherwise as [`kernel_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        (a, lda): (*const f32, usize),
        b: *const f32,
        kc: usize,
        c: *mut f32,
        bias: *const f32,
        t: Tile,
    ) {
        const MR: usize = 6;
        // Whole tiles go without masks: AMD microcodes masked stores, and with them the
        // kernel ran at 0.77-0.86x of gemm on Zen 3 (one thread, the MLP GAN's products).
        let full = t.cols == 16;
        let mask = |n: usize| {
            let lanes: [i32; 8] = std::array::from_fn(|j| if j < n { -1 } else { 0 });
            _mm256_loadu_si256(lanes.as_ptr().cast())
        };
        let (m0, m1) = (mask(t.cols), mask(t.cols.saturating_sub(8)));
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        if !t.first {
            for i in 0..t.rows.min(MR) {
                if full {
                    acc0[i] = _mm256_loadu_ps(c.add(i * t.ldc));
                    acc1[i] = _mm256_loadu_ps(c.add(i * t.ldc + 8));
                } else {
                    acc0[i] = _mm256_maskload_ps(c.add(i * t.ldc), m0);
                    acc1[i] = _mm256_maskload_ps(c.wrapping_add(i * t.ldc + 8), m1);
                }
            }
        }
        for kk in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(kk * 16));
            let b1 = _mm256_loadu_ps(b.add(kk * 16 + 8));
            for i in 0..MR {
                let ai = _mm256_set1_ps(*a.add(i * lda + kk));
                acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
            }
        }
        if !bias.is_null() {
            let (b0, b1) = (
                _mm256_maskload_ps(bias, m0),
                _mm256_maskload_ps(bias.wrapping_add(8), m1),
            );
            for i in 0..MR {
                acc0[i] = _mm256_add_ps(acc0[i], b0);
                acc1[i] = _mm256_add_ps(acc1[i], b1);
            }
            if let Some(a) = t.leaky {
                let (a, zero) = (_mm256_set1_ps(a), _mm256_setzero_ps());
                let leaky = |v: __m256| {
                    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(v, zero);
                    _mm256_blendv_ps(_mm256_mul_ps(a, v), v, positive)
                };
                for i in 0..MR {
                    acc0[i] = leaky(acc0[i]);
                    acc1[i] = leaky(acc1[i]);
                }
            }
        }
        for i in 0..t.rows.min(MR) {
            if full {
                _mm256_storeu_ps(c.add(i * t.ldc), acc0[i]);
                _mm256_storeu_ps(c.add(i * t.ldc + 8), acc1[i]);
            } else {
                _mm256_maskstore_ps(c.add(i * t.ldc), m0, acc0[i]);
                _mm256_maskstore_ps(c.wrapping_add(i * t.ldc + 8), m1, acc1[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) from a seed.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        crate::fast::kernels::values(&mut s, len)
    }

    #[test]
    fn packed_products_are_the_sums_in_double_precision() {
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|i| i.available())
            .collect();
        if isas.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512F nor AVX2 + FMA");
            return;
        }
        // Edge rows and columns of every tile size, k across several `kc` blocks, one
        // output column, one input, more rows than MC.
        let shapes = [
            (64, 1024, 784),
            (7, 300, 33),
            (13, 257, 17),
            (1, 1, 1),
            (300, 5, 1),
            (9, 513, 65),
            (2, 0, 3),
            (3, 4, 0),
        ];
        for isa in isas {
            for (si, &(m, k, n)) in shapes.iter().enumerate() {
                let x = values(m * k, si as u64 + 1);
                let w = values(n * k, si as u64 + 100);
                let b = values(n, si as u64 + 200);
                let packed = pack(&w, n, k, isa);
                let y = product(&x, (m, k, n), &packed, &b, None, isa);
                // The fused leaky ReLU is the plain one of the same sums, bit for bit.
                let fused = product(&x, (m, k, n), &packed, &b, Some(0.2), isa);
                for (f, v) in fused.iter().zip(&y) {
                    let want = if *v > 0.0 { *v } else { 0.2 * v };
                    assert_eq!(f.to_bits(), want.to_bits(), "{isa:?} {m}x{k}x{n}: leaky");
                }
                for r in 0..m {
                    for j in 0..n {
                        let want = (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                            .sum::<f64>()
                            + b[j] as f64;
                        let got = y[r * n + j] as f64;
                        let tol = 1e-6 * (k as f64).sqrt() * 4.0 + 1e-6;
                        assert!(
                            (got - want).abs() <= tol,
                            "{isa:?} {m}x{k}x{n} at ({r}, {j}): {got} against {want}"
                        );
                    }
                }
            }
        }
    }
}
