//! Convolutions that read the image in place instead of through a patch matrix.
//!
//! A convolution as im2col + product writes every patch out (2-8 times the input for
//! this project's strided layers) and gemm then copies the patches again into its own
//! panels: for the energy model's small critic, which climbs 60 searches a step with its
//! weights frozen, those two passes were a quarter of the step (docs/BENCHMARKS.md).
//! Where no weight gradient is wanted the patches have no other use, so the kernel here
//! multiplies straight from a zero-padded copy of each image: `mr` output pixels times
//! `16 nv` output channels held in registers, each step of the sum one weight vector and
//! `mr` broadcast pixels.
//!
//! The bits are gemm's: for a sum of 3 to 512 terms gemm runs one block of its
//! micro-kernel, one fused multiply-add per term in order from zero, and so does this
//! kernel; [`in_order`] says when that holds for the product `gemm_threads` would run.

use rayon::prelude::*;

use super::kernels::{self, ConvGeom};
use super::packed::Isa;

/// Whether gemm, as `gemm_threads` calls it, sums every element of the `m x n x k`
/// product in order with one fused multiply-add per term from zero: its micro-kernel
/// with a single block of the sum (`k <= 512`), not its paths for `k <= 2` (outer
/// products), one row or column (matrix-vector) or at most 16 x 16 outputs (horizontal
/// sums), for each block of columns the threads get.
pub(crate) fn in_order(m: usize, n: usize, k: usize) -> bool {
    let widths = match kernels::column_split(m, n, k, kernels::threads()) {
        Some((step, blocks)) => [step, n - (blocks - 1) * step],
        None => [n, n],
    };
    (3..=512).contains(&k) && m > 1 && widths.iter().all(|&w| w > 1 && m * w > 256)
}

/// `[n, o, oh, ow]`: the convolution plus the bias `b`, bit for bit the product of
/// [`super::kernels::patches`] by the kernel's transpose then
/// [`super::kernels::transpose_each`] with the bias; `None` where that product would not
/// sum in order ([`in_order`]) or the CPU lacks AVX-512.
pub(crate) fn conv(x: &[f32], g: &ConvGeom, w: &[f32], b: &[f32], o: usize) -> Option<Vec<f32>> {
    let (k, p) = (g.k(), g.oh * g.ow);
    if Isa::detect() != Some(Isa::Avx512) || !in_order(g.cols(), o, k) {
        return None;
    }
    assert_eq!(w.len(), o * k, "direct conv: weight and shape disagree");
    assert_eq!(b.len(), o, "direct conv: bias and shape disagree");
    assert_eq!(
        x.len(),
        g.n * g.c * g.h * g.w,
        "direct conv: input and shape disagree"
    );
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let lanes = o.div_ceil(16) * 16;
    // The weight's transpose, each step of the sum one row of `lanes` (zero-padded).
    let mut wt = vec![0.0f32; k * lanes];
    for (oi, row) in w.chunks_exact(k).enumerate() {
        for (kk, &v) in row.iter().enumerate() {
            wt[kk * lanes + oi] = v;
        }
    }
    let mut taps = Vec::with_capacity(k);
    for ci in 0..g.c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                taps.push((ci * hp + ky) * wp + kx);
            }
        }
    }
    let starts: Vec<usize> = (0..p)
        .map(|pix| (pix / g.ow) * g.stride * wp + (pix % g.ow) * g.stride)
        .collect();
    let plane = g.h * g.w;
    let mut out: Vec<f32> = Vec::with_capacity(g.n * p * o);
    out.spare_capacity_mut()[..g.n * p * o]
        .par_chunks_mut(p * o)
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0.0f32; p * o]),
            |(padded, rows), (ni, dst)| {
                let image = &x[ni * g.c * plane..][..g.c * plane];
                let src = match g.pad {
                    0 => image,
                    pad => {
                        // The border is zeroed once; each image overwrites the inside.
                        if padded.len() != g.c * hp * wp {
                            *padded = vec![0.0f32; g.c * hp * wp];
                        }
                        for (ci, from) in image.chunks_exact(plane).enumerate() {
                            for (y, row) in from.chunks_exact(g.w).enumerate() {
                                padded[(ci * hp + y + pad) * wp + pad..][..g.w]
                                    .copy_from_slice(row);
                            }
                        }
                        &padded[..]
                    }
                };
                // SAFETY: AVX-512 is present (checked above); every tap of every output
                // pixel lies inside the padded image (`(oh - 1) stride + kh <= h + 2
                // pad`, the same across), `wt` holds `k` rows of `lanes`, and `rows` is
                // `p` rows of `o`, each written in full by the tiles.
                unsafe { image_rows(src, &taps, &starts, &wt, lanes, o, rows) };
                // [P, O] to [O, P] plus the bias, as `transpose_each` adds it.
                for (c, plane) in dst.chunks_exact_mut(p).enumerate() {
                    for (d, r) in plane.iter_mut().zip(rows.chunks_exact(o)) {
                        d.write(r[c] + b[c]);
                    }
                }
            },
        );
    // SAFETY: every image's planes were written in full above.
    unsafe { out.set_len(g.n * p * o) };
    Some(out)
}

/// One image's `p` output rows of `o` channels, tile by tile.
///
/// # Safety
/// As in [`conv`].
#[cfg(target_arch = "x86_64")]
unsafe fn image_rows(
    src: &[f32],
    taps: &[usize],
    starts: &[usize],
    wt: &[f32],
    lanes: usize,
    o: usize,
    dst: &mut [f32],
) {
    let (vectors, out) = (lanes / 16, dst.as_mut_ptr());
    let mut v0 = 0;
    while v0 < vectors {
        let nv = match vectors - v0 {
            4.. => 4,
            2 | 3 => 2,
            _ => 1,
        };
        let run = |mr: usize, pix: usize| Tile {
            src: src.as_ptr(),
            taps,
            wt: wt.as_ptr().add(16 * v0),
            lanes,
            out: out.add(pix * o + 16 * v0),
            ldo: o,
            rows: mr.min(starts.len() - pix),
            cols: o - 16 * v0,
        };
        match nv {
            4 => {
                for pix in (0..starts.len()).step_by(4) {
                    x86::tile::<4, 4>(run(4, pix), &starts[pix..]);
                }
            }
            2 => {
                for pix in (0..starts.len()).step_by(8) {
                    x86::tile::<8, 2>(run(8, pix), &starts[pix..]);
                }
            }
            _ => {
                for pix in (0..starts.len()).step_by(8) {
                    x86::tile::<8, 1>(run(8, pix), &starts[pix..]);
                }
            }
        }
        v0 += nv;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn image_rows(
    _: &[f32],
    _: &[usize],
    _: &[usize],
    _: &[f32],
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("no direct convolution off x86-64")
}

/// One kernel call: `rows` output pixels (their first taps at `starts`) times the
/// channels from the tile's first, `cols` of them left in the row.
struct Tile<'a> {
    src: *const f32,
    taps: &'a [usize],
    wt: *const f32,
    lanes: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tile;
    use std::arch::x86_64::*;

    /// `MR` pixels x `16 NV` channels: for each tap in order, one weight row and a
    /// broadcast pixel per output pixel, fused into the running sums.
    ///
    /// # Safety
    /// AVX-512F present; `t` as [`super::conv`] builds it, `starts` holding at least
    /// `t.rows` entries.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const MR: usize, const NV: usize>(t: Tile, starts: &[usize]) {
        // Pixels past the last are computed from the last one's taps and not stored.
        let at: [usize; MR] = std::array::from_fn(|j| starts[j.min(t.rows - 1)]);
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for (kk, &tap) in t.taps.iter().enumerate() {
            let x = t.src.add(tap);
            let w = t.wt.add(kk * t.lanes);
            let wv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(w.add(16 * v)));
            for j in 0..MR {
                let a = _mm512_set1_ps(*x.add(at[j]));
                for v in 0..NV {
                    acc[j][v] = _mm512_fmadd_ps(a, wv[v], acc[j][v]);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate().take(t.rows) {
            for (v, &acc) in acc.iter().enumerate() {
                let left = t.cols.saturating_sub(16 * v).min(16);
                if left > 0 {
                    let mask = ((1u32 << left) - 1) as __mmask16;
                    _mm512_mask_storeu_ps(t.out.add(j * t.ldo + 16 * v), mask, acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::kernels::{patches, product, Mat};

    fn filled(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 23) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// The direct convolution is the patches' product (then the bias) bit for bit, on geometries with
    /// padding, strides, channel counts off the vector width and pixels past a tile.
    #[test]
    fn direct_rows_are_the_patch_product_bit_for_bit() {
        if Isa::detect() != Some(Isa::Avx512) {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        // (n, c, h, w, k, stride, pad, o)
        for (i, &(n, c, h, wd, kw, stride, pad, o)) in [
            (32, 1, 28, 28, 5, 2, 4, 16),
            (32, 16, 16, 16, 3, 2, 1, 32),
            (32, 32, 8, 8, 3, 2, 1, 64),
            (32, 56, 4, 4, 3, 2, 1, 64),
            (8, 8, 8, 8, 3, 1, 1, 130),
            (5, 3, 9, 7, 3, 1, 1, 17),
            (4, 2, 11, 11, 4, 2, 1, 48),
            (3, 5, 6, 6, 2, 1, 0, 100),
            (2, 56, 5, 5, 3, 1, 2, 20),
        ]
        .iter()
        .enumerate()
        {
            let g = ConvGeom {
                n,
                c,
                h,
                w: wd,
                kh: kw,
                kw,
                stride,
                pad,
                oh: (h + 2 * pad - kw) / stride + 1,
                ow: (wd + 2 * pad - kw) / stride + 1,
            };
            let (k, np) = (g.k(), g.cols());
            let x = filled(n * c * h * wd, 2 * i as u32 + 1);
            let w = filled(o * k, 2 * i as u32 + 2);
            let b = filled(o, 2 * i as u32 + 3);
            let yt = product(Mat::rows(&patches(&x, &g), k), Mat::t(&w, k), np, o, k);
            let want = kernels::transpose_each(&yt, n, np / n, o, Some(&b));
            let got = conv(&x, &g, &w, &b, o).expect("these products sum in order");
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "geometry {i}: {:?} vs {:?}", &want[..4], &got[..4]);
        }
    }

    #[test]
    fn products_that_gemm_sums_otherwise_are_left_to_it() {
        assert!(in_order(8192, 16, 25));
        assert!(in_order(128, 64, 504));
        assert!(!in_order(8192, 16, 513), "two blocks of the sum");
        assert!(!in_order(8192, 16, 2), "outer products");
        assert!(!in_order(8192, 1, 25), "matrix-vector");
        assert!(!in_order(16, 16, 25), "horizontal sums");
        if kernels::threads() > 1 {
            // 129 columns on two threads: blocks of 65 and 64, each of 4 rows.
            assert!(!in_order(4, 129, 100), "split into blocks of columns");
            assert!(in_order(5, 129, 100));
        }
    }
}
