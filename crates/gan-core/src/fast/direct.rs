//! Convolutions that read the image in place instead of through a patch matrix.
//!
//! A convolution as im2col + product writes every patch out (2-8 times the input for
//! this project's strided layers) and gemm then copies the patches again into its own
//! panels: for the energy model's small critic, which climbs 60 searches a step with its
//! weights frozen, those two passes were a quarter of the step (docs/BENCHMARKS.md).
//! Where no weight gradient is wanted the patches have no other use, so the kernel here
//! multiplies straight from a zero-padded copy of each image: `mr` output pixels times
//! `nv` vectors of output channels held in registers, each step of the sum one weight
//! vector and `mr` broadcast pixels. The kernels are written once over [`x86::Simd`]
//! and compiled for AVX-512 (16 lanes) and for AVX2 (8 lanes, half as many registers:
//! smaller tiles).
//!
//! A transposed convolution's forward pass (the adjoint of a convolution) is the other
//! way round: gemm forms a column matrix (`o kh kw` rows, 4-16 times the output) that
//! col2im then scatters into the image; [`conv_adjoint`] gathers each output pixel's
//! terms from the input instead, in registers.
//!
//! A convolution's weight gradient is the output's gradient times the patch matrix;
//! [`weight_grad`] reads each patch entry from a padded copy of a block of images at a
//! fixed offset from its output pixel's corner, in gemm's own tile.
//!
//! The bits are gemm's: for a sum of 3 to 512 terms gemm runs one block of its
//! micro-kernel, one fused multiply-add per term in order from zero, and so do these
//! kernels; [`in_order`] says when that holds for the product `gemm_threads` would run.
//! Longer sums gemm takes in blocks ([`kernels::depth_block`]), each summed from zero and
//! added to the sum so far, and so do the kernels.

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
    widths.iter().all(|&w| sums_in_order(m, w, k))
}

/// Whether gemm, called on the `m x n x k` product single-threaded, sums every element
/// in order from zero (as [`in_order`], for one block of columns).
pub(crate) fn sums_in_order(m: usize, n: usize, k: usize) -> bool {
    (3..=512).contains(&k) && m > 1 && n > 1 && m * n > 256
}

/// Whether a convolution of `o` outputs over sums of `k` terms should try gemm's blocks
/// of patches ([`kernels::patch_convolve`], the same bits) before [`conv`]. Each of
/// [`conv`]'s tiles of pixels reads the whole weight; past 256 KB it streams from L2
/// every time, and on AVX2 the patches were faster: InfoGAN's 64 -> 128 layer (512 KB)
/// took 22.1 ms against 26.6 at batch 256 and 5.5 against 7.1 at 64 (two threads, Zen 3,
/// alternating call by call). At 256 KB (32 -> 128, 4x4) the two were level; below it
/// [`conv`] wins (DCGAN's 32 -> 64: 5.3 against 6.0 ms).
pub(crate) fn prefers_patches(o: usize, k: usize) -> bool {
    Isa::detect() == Some(Isa::Avx2) && o * k > 64 * 1024
}

/// `[n, o, oh, ow]`: the convolution plus the bias `b`, bit for bit the product of
/// [`super::kernels::patches`] by the kernel's transpose then
/// [`super::kernels::transpose_each`] with the bias; `None` where the blocks in which
/// that product sums are not known ([`in_order`], [`kernels::depth_block`]) or the CPU
/// has neither AVX-512 nor AVX2.
///
/// Sums of more than one block (a 64-channel layer's 4x4 taps: 1,024 terms) are summed
/// as gemm sums them: each block from zero in registers, then added to the pixel's sum
/// so far, so the layers that took whole patch rows through gemm read the image in place
/// too.
pub(crate) fn conv(x: &[f32], g: &ConvGeom, w: &[f32], b: &[f32], o: usize) -> Option<Vec<f32>> {
    let (k, p) = (g.k(), g.oh * g.ow);
    let isa = Isa::detect()?;
    let block = match in_order(g.cols(), o, k) {
        true => k,
        false => kernels::depth_block(g.cols(), o, k)?,
    };
    assert_eq!(w.len(), o * k, "direct conv: weight and shape disagree");
    assert_eq!(b.len(), o, "direct conv: bias and shape disagree");
    assert_eq!(
        x.len(),
        g.n * g.c * g.h * g.w,
        "direct conv: input and shape disagree"
    );
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let lanes = o.next_multiple_of(width(isa));
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
                let tiles = Image {
                    src,
                    taps: &taps,
                    block,
                    starts: &starts,
                    wt: &wt,
                    lanes,
                    o,
                };
                // SAFETY: `isa` is this CPU's; every tap of every output pixel lies
                // inside the padded image (`(oh - 1) stride + kh <= h + 2 pad`, the same
                // across), `wt` holds `k` rows of `lanes` (whole vectors of `isa`), and
                // `rows` is `p` rows of `o`, each written in full by the tiles.
                unsafe { image_rows(isa, &tiles, rows) };
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
    kernels::count_flops(g.cols(), o, k);
    Some(out)
}

/// `[n, c, h, w]`: the adjoint of a convolution applied to `grad` `[n, o, oh, ow]` (a
/// convolution's input gradient; the forward pass of a transposed convolution, without
/// its bias), bit for bit [`super::kernels::col2im`] of the product of the kernel's
/// transpose by `grad`'s columns; `None` where that product would not sum in order
/// ([`in_order`]), the result has fewer than 16 channels or rows of under 6 pixels per
/// stride, the CPU has neither AVX-512 nor AVX2, or (AVX2) one image's gradient planes
/// outgrow 32 KB.
///
/// Pixels of one row whose columns share a remainder modulo the stride meet the same
/// taps, at consecutive columns of `grad`: a tile of them times vectors of channels forms
/// each tap's column entries in registers (the sum over `o` in order, as gemm forms
/// them) and adds them to the pixels' sums tap by tap in kernel order, as col2im adds
/// them. Columns a tile reaches past the edges read zeros (a zero-padded copy of `grad`);
/// a zero term leaves a sum's bits as they are (a sum from +0 is never -0).
pub(crate) fn conv_adjoint(grad: &[f32], w: &[f32], g: &ConvGeom, o: usize) -> Option<Vec<f32>> {
    let (k, p, kk, s) = (g.k(), g.oh * g.ow, g.kh * g.kw, g.stride);
    let isa = Isa::detect()?;
    // A row's pixels come in classes of `w / stride` (the tiles' pixels): for classes
    // under 6, the tiles of 8 ran mostly empty (the energy model's 8- and 4-pixel rows at
    // stride 2, classes of 4 and 2: 1.1-1.2x and 1.4-1.9x the time of gemm and col2im,
    // one thread, batches of 64 and 256), where classes of 7 and 8 took 0.76-0.91x.
    if !in_order(k, g.cols(), o) {
        return None;
    }
    if g.c == 1 {
        return one_channel_adjoint(grad, w, g, o, isa);
    }
    if g.c < 16 || g.w.div_ceil(g.stride) < 6 {
        return None;
    }
    assert_eq!(w.len(), o * k, "direct conv: weight and shape disagree");
    assert_eq!(
        grad.len(),
        g.n * o * p,
        "direct conv: gradient and shape disagree"
    );
    // Gradient rows padded by `left` zeros (the most a tap reaches before column 0)
    // and enough after for the last column a pixel reaches plus a whole tile.
    let left = (g.kw - 1).div_ceil(s);
    let reach = (g.w - 1 + g.pad) / s + 1;
    let owp = left + reach.max(g.ow) + TILE_PIXELS;
    // A tile reads its pixels' columns from every one of the `o` gradient planes: with
    // AVX2 (Zen 3's 32 KB L1) the gather lost to gemm and col2im where one image's
    // padded planes outgrow 32 KB (InfoGAN's 128 x 7 x 18 floats, 64.5 KB: generation 8%
    // slower) and won below (DCGAN's 64-plane layer, the energy model's critic).
    if isa == Isa::Avx2 && o * g.oh * owp * std::mem::size_of::<f32>() > 32 << 10 {
        return None;
    }
    // The weight by tap, then output channel, the input channels in a row of `cl`.
    let cl = g.c.next_multiple_of(width(isa));
    let mut wk = vec![0.0f32; kk * o * cl];
    for (oi, row) in w.chunks_exact(k).enumerate() {
        for (ci, taps) in row.chunks_exact(kk).enumerate() {
            for (tap, &v) in taps.iter().enumerate() {
                wk[(tap * o + oi) * cl + ci] = v;
            }
        }
    }
    let hw = g.h * g.w;
    let len = g.n * g.c * hw;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(g.c * hw)
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; o * g.oh * owp], vec![0.0f32; hw * cl]),
            |(padded, pixels), (ni, dst)| {
                let image = &grad[ni * o * p..][..o * p];
                for (row, from) in image.chunks_exact(g.ow).enumerate() {
                    padded[row * owp + left..][..g.ow].copy_from_slice(from);
                }
                pixels.fill(0.0);
                // SAFETY: `isa` is this CPU's; the tiles read `padded` inside its rows
                // (`left` and `owp` above) and `wk` inside its `kk o` rows of `cl` (whole
                // vectors of `isa`), and write `pixels` (`[h w, cl]`) inside.
                unsafe {
                    gather_image(
                        isa,
                        &Planes {
                            padded,
                            owp,
                            left,
                            wk: &wk,
                            g,
                            o,
                            cl,
                        },
                        pixels,
                    )
                };
                for (ci, plane) in dst.chunks_exact_mut(hw).enumerate() {
                    for (d, px) in plane.iter_mut().zip(pixels.chunks_exact(cl)) {
                        d.write(px[ci]);
                    }
                }
            },
        );
    // SAFETY: every image's planes were written in full above.
    unsafe { out.set_len(len) };
    kernels::count_flops(k, g.cols(), o);
    Some(out)
}

/// Kernel widths [`one_channel_adjoint`] takes (its sums sit in registers, one a column).
const MAX_ONE_CHANNEL_KW: usize = 5;

/// [`conv_adjoint`] for a single channel (the image a critic's first layer reads, which
/// its input gradient climbs or trains a generator through; a generator's last layer):
/// vectors of output pixels of one row instead of channels, whose column entries each
/// tap's sum over `o` forms in registers (one fused multiply-add a term, in order from
/// zero, as gemm) and adds to pixels `stride` apart. Those pixels lie side by side in a
/// copy of the image split by column remainder modulo the stride, interleaved back at
/// the end. A pixel's terms arrive in col2im's order (tap by tap in kernel order): rows of
/// the gradient from the last, so that a pixel meets its kernel rows from the first, and
/// within a row the columns from the last block for the same reason. The column matrix
/// (16-25 times the image), its product and col2im's scatter are gone: the backward pass
/// of the energy model's first layer at batch 32 (its input gradient alone) 0.155 ->
/// 0.089 ms, DCGAN's critic's at batch 64 0.234 -> 0.212 and at 256 1.9 -> 1.15, one
/// thread.
fn one_channel_adjoint(
    grad: &[f32],
    w: &[f32],
    g: &ConvGeom,
    o: usize,
    isa: Isa,
) -> Option<Vec<f32>> {
    if g.kw > MAX_ONE_CHANNEL_KW {
        return None;
    }
    let (kk, p, s, hw) = (g.kh * g.kw, g.oh * g.ow, g.stride, g.h * g.w);
    assert_eq!(w.len(), o * kk, "direct conv: weight and shape disagree");
    assert_eq!(
        grad.len(),
        g.n * o * p,
        "direct conv: gradient and shape disagree"
    );
    // Gradient rows padded to whole vectors of either set (zeros: terms of +0).
    let owr = g.ow.next_multiple_of(16);
    // Columns before the first pixel a tap reaches (`left` of them), after the last.
    let left = g.pad.div_ceil(s);
    let w2 = left + owr + g.kw.div_ceil(s) + 1;
    // The weight by kernel row, column, then output channel.
    let mut wt = vec![0.0f32; kk * o];
    for (oi, taps) in w.chunks_exact(kk).enumerate() {
        for (tap, &v) in taps.iter().enumerate() {
            wt[tap * o + oi] = v;
        }
    }
    let len = g.n * hw;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; o * g.oh * owr], vec![0.0f32; s * g.h * w2]),
            |(padded, split), (ni, dst)| {
                let image = &grad[ni * o * p..][..o * p];
                for (row, from) in image.chunks_exact(g.ow).enumerate() {
                    padded[row * owr..][..g.ow].copy_from_slice(from);
                }
                split.fill(0.0);
                let plane = OnePlane {
                    padded,
                    owr,
                    left,
                    w2,
                    wt: &wt,
                    g,
                    o,
                };
                // SAFETY: `isa` is this CPU's; the sums read `padded` inside its rows of
                // `owr` (whole vectors of either set) and write `split` inside its rows of
                // `w2` (`left` before the first column a tap reaches and a vector after).
                unsafe { one_plane(isa, &plane, split) };
                for (iy, row) in dst.chunks_exact_mut(g.w).enumerate() {
                    for r in 0..s.min(g.w) {
                        let from = &split[(r * g.h + iy) * w2 + left..];
                        for (d, &v) in row[r..].iter_mut().step_by(s).zip(from) {
                            d.write(v);
                        }
                    }
                }
            },
        );
    // SAFETY: every image's plane was written in full above.
    unsafe { out.set_len(len) };
    kernels::count_flops(kk, g.cols(), o);
    Some(out)
}

/// What one image of [`one_channel_adjoint`] reads.
struct OnePlane<'a> {
    padded: &'a [f32],
    owr: usize,
    left: usize,
    w2: usize,
    wt: &'a [f32],
    g: &'a ConvGeom,
    o: usize,
}

/// One image of [`one_channel_adjoint`], added into `split`.
///
/// # Safety
/// As in [`one_channel_adjoint`]: `isa` present.
unsafe fn one_plane(isa: Isa, plane: &OnePlane, split: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::one_plane_avx512(plane, split),
        Isa::Avx2 => x86::one_plane_avx2(plane, split),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no direct convolution off x86-64: {isa:?} {}",
        plane.o + split.len()
    )
}

/// `dst[m, K] (+)= a[m, N P] x patches(x)`: a convolution's weight gradient (`a` the
/// output's gradient, given in the output's layout `[N, m, P]`) read from a zero-padded
/// copy of the images instead of patch rows, bit for bit [`kernels::patch_product`] of
/// `a`'s `[m, N P]` transpose. The tile is gemm's own (vectors of `m` times
/// 6 columns of the kernel), each term one vector of `a`'s transpose and a broadcast
/// pixel at the column's offset from the output pixel's corner; each of gemm's blocks
/// of the sum ([`kernels::depth_block`]) is summed from zero and added as gemm adds it.
/// The patch rows (a copy of the image 4-16 times its size) and gemm's packing of them
/// are gone. Returns false, doing nothing, where the blocks are not known, the CPU has
/// neither AVX-512 nor AVX2, the kernel has under 64 columns (the first layers' 16
/// taps of one channel: too few tiles to share, and cheap patches), the gradient under
/// 64 rows (less than a whole tile) or the output planes under 49 pixels (7x7), where
/// the patches were as fast or faster.
pub(crate) fn weight_grad(
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    x: &[f32],
    g: &ConvGeom,
    m: usize,
) -> bool {
    let (k, p, np) = (g.k(), g.oh * g.ow, g.cols());
    let (Some(isa), Some(block)) = (Isa::detect(), kernels::depth_block(m, k, np)) else {
        return false;
    };
    // One-thread times against the patches' blocks: 0.90x for DCGAN's 64 -> 128 layer
    // (m 128, 7x7 planes) and 0.87x for VAE-GAN's 32 -> 64 (m 64); 1.11x for the energy
    // model's m of 32 (half a tile), 1.05x for its 2x2 planes, 0.97x for its 4x4.
    if k < 64 || m < 64 || p < 49 {
        return false;
    }
    assert_eq!(
        dst.len(),
        m * k,
        "weight gradient: destination and shape disagree"
    );
    assert_eq!(
        x.len(),
        g.n * g.c * g.h * g.w,
        "weight gradient: input and shape disagree"
    );
    assert_eq!(
        a.len(),
        m * np,
        "weight gradient: gradient and shape disagree"
    );
    let ml = m.next_multiple_of(width(isa));
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (plane, padded_plane) = (g.h * g.w, hp * wp);
    // A block's padded images and gradient rows are read by every tile: past about a
    // megabyte (a core's L2) the patches' blocks were faster (128 -> 256 channels on
    // 7x7 images, 2.5 MB a block: 4.6 ms against 3.4; DCGAN's 64 -> 128 layer, 0.95 MB:
    // 4.6 against 5.3, and 17.6 against 21.0 at batch 256, one thread).
    let images = (block - 1) / p + 2;
    if (images * g.c * padded_plane + block * ml) * std::mem::size_of::<f32>() > 1 << 20 {
        return false;
    }
    let offs: Vec<usize> = (0..g.c)
        .flat_map(|ci| (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ci, ky, kx))))
        .map(|(ci, ky, kx)| (ci * hp + ky) * wp + kx)
        .collect();
    // The sums by column, `[K, ml]`, from `dst` where it is added to.
    let mut sums = vec![0.0f32; k * ml];
    if accumulate {
        sums.par_chunks_mut(ml).enumerate().for_each(|(kc, row)| {
            for (mi, v) in row[..m].iter_mut().enumerate() {
                *v = dst[mi * k + kc];
            }
        });
    }
    // One block of the sum at a time: its images padded (the border zeroed once) and
    // `a`'s transpose for its output pixels (row `q` the `m` gradients of pixel `q`,
    // zero-padded to whole vectors), a few hundred kilobytes that stay in the cache.
    let mut xp = vec![0.0f32; images * g.c * padded_plane];
    let mut at = vec![0.0f32; block * ml];
    // Each task takes its columns through the block's tiles.
    let group = (k / (4 * kernels::threads()))
        .next_multiple_of(WG_COLS)
        .max(WG_COLS);
    for (bi, q0) in (0..np).step_by(block).enumerate() {
        let q1 = (q0 + block).min(np);
        let (first, last) = (q0 / p, (q1 - 1) / p);
        xp.par_chunks_mut(g.c * padded_plane)
            .zip(x[first * g.c * plane..(last + 1) * g.c * plane].par_chunks(g.c * plane))
            .for_each(|(to, from)| {
                for (to, from) in to
                    .chunks_exact_mut(padded_plane)
                    .zip(from.chunks_exact(plane))
                {
                    for (y, row) in from.chunks_exact(g.w).enumerate() {
                        to[(y + g.pad) * wp + g.pad..][..g.w].copy_from_slice(row);
                    }
                }
            });
        at[..(q1 - q0) * ml]
            .par_chunks_mut(64 * ml)
            .enumerate()
            .for_each(|(qb, rows)| transpose_into(a, q0 + qb * 64, rows, (m, ml, p)));
        let corners: Vec<usize> = (q0..q1)
            .map(|q| {
                let (ni, pix) = (q / p - first, q % p);
                ni * g.c * padded_plane + (pix / g.ow) * g.stride * wp + (pix % g.ow) * g.stride
            })
            .collect();
        let (xp, at) = (&xp, &at);
        sums.par_chunks_mut(group * ml)
            .enumerate()
            .for_each(|(t, rows)| {
                for (j, rows) in rows.chunks_mut(WG_COLS * ml).enumerate() {
                    let from = t * group + j * WG_COLS;
                    let cols = rows.len() / ml;
                    let terms = Terms {
                        xp,
                        corners: &corners,
                        offs: std::array::from_fn(|c| offs[from + c.min(cols - 1)]),
                        at,
                        ml,
                        add: accumulate || bi > 0,
                    };
                    // SAFETY: `isa` is this CPU's; every corner plus every offset lies in
                    // `xp` (the block's padded images: `(oh - 1) stride + kh <= h + 2
                    // pad`), `at` holds a row of `ml` (whole vectors of `isa`) for each
                    // corner, and `rows` is `cols` rows of `ml`.
                    unsafe { column_sums(isa, &terms, rows) };
                }
            });
    }
    dst.par_chunks_mut(k).enumerate().for_each(|(mi, row)| {
        for (d, s) in row.iter_mut().zip(sums.chunks_exact(ml)) {
            *d = s[mi];
        }
    });
    kernels::count_flops(m, k, np);
    true
}

/// Rows `from..` of the transpose of `a` (`[N, m, P]`, `P = p`) as `[N P, m]` into
/// `rows` (each `ml` long, its first `m` written): one image's run of pixels at a time,
/// each channel's run contiguous.
fn transpose_into(a: &[f32], from: usize, rows: &mut [f32], (m, ml, p): (usize, usize, usize)) {
    let count = rows.len() / ml;
    let mut done = 0;
    while done < count {
        let (ni, pix) = ((from + done) / p, (from + done) % p);
        let len = (p - pix).min(count - done);
        let dst = &mut rows[done * ml..(done + len) * ml];
        for mi in 0..m {
            let src = &a[(ni * m + mi) * p + pix..][..len];
            for (row, &v) in dst.chunks_exact_mut(ml).zip(src) {
                row[mi] = v;
            }
        }
        done += len;
    }
}

/// Columns of the kernel in a tile of [`weight_grad`]: gemm's 6.
const WG_COLS: usize = 6;

/// What one tile of [`weight_grad`] reads: the padded images, each output pixel's corner
/// in them and each of the tile's columns' offset from it, the gradient's transpose in
/// rows of `ml`; whether the block's sums are added to those already there.
struct Terms<'a> {
    xp: &'a [f32],
    corners: &'a [usize],
    offs: [usize; WG_COLS],
    at: &'a [f32],
    ml: usize,
    add: bool,
}

/// One block of the sums of up to [`WG_COLS`] columns (`sums` `[cols, ml]`).
///
/// # Safety
/// As in [`weight_grad`]: `isa` present, `ml` whole vectors of it.
unsafe fn column_sums(isa: Isa, terms: &Terms, sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::column_sums_avx512(terms, sums),
        Isa::Avx2 => x86::column_sums_avx2(terms, sums),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no direct convolution off x86-64: {isa:?} {}",
        terms.ml + sums.len()
    )
}

/// Pixels of a tile of [`conv_adjoint`] at most (the padded rows leave room for a whole
/// one past a row's last pixel).
const TILE_PIXELS: usize = 8;

/// `n` pixels as tiles of at most `most` (at least 1): as few tiles as that allows, their
/// sizes differing by at most one, the larger first. A kernel tile sized to its pixels
/// computes none it does not store, where tiles of `most` would leave the last one
/// mostly empty.
fn tile_sizes(n: usize, most: usize) -> impl Iterator<Item = usize> {
    let tiles = n.div_ceil(most);
    let big = match tiles {
        0 => 0,
        t => n.div_ceil(t),
    };
    // `bigs` tiles of `big` pixels, then tiles of `big - 1`.
    let bigs = n - tiles * big.saturating_sub(1);
    (0..tiles).map(move |t| big - usize::from(t >= bigs))
}

/// Lanes of `isa`'s vectors: the weights' rows are padded to whole vectors of them.
fn width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
    }
}

/// What the tiles of one image of [`conv`] read: the (padded) image, each tap's offset
/// in it, each output pixel's first tap, and the weight's transpose in rows of `lanes`.
struct Image<'a> {
    src: &'a [f32],
    taps: &'a [usize],
    /// Terms summed from zero before they are added to the sum so far (gemm's blocks).
    block: usize,
    starts: &'a [usize],
    wt: &'a [f32],
    lanes: usize,
    o: usize,
}

/// One image's `p` output rows of `o` channels into `dst`, tile by tile.
///
/// # Safety
/// As in [`conv`]: `isa` present, `lanes` whole vectors of it.
unsafe fn image_rows(isa: Isa, image: &Image, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::image_rows_avx512(image, dst),
        Isa::Avx2 => x86::image_rows_avx2(image, dst),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no direct convolution off x86-64: {isa:?} {}",
        image.o + dst.len()
    )
}

/// What one image of [`conv_adjoint`] reads: its gradient planes padded to rows of `owp`
/// (`left` zeros first), the weight by tap and output channel in rows of `cl`.
struct Planes<'a> {
    padded: &'a [f32],
    owp: usize,
    left: usize,
    wk: &'a [f32],
    g: &'a ConvGeom,
    o: usize,
    cl: usize,
}

/// One image of [`conv_adjoint`], added into `pixels`.
///
/// # Safety
/// As in [`conv_adjoint`]: `isa` present, `cl` whole vectors of it.
unsafe fn gather_image(isa: Isa, planes: &Planes, pixels: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::gather_image_avx512(planes, pixels),
        Isa::Avx2 => x86::gather_image_avx2(planes, pixels),
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no direct convolution off x86-64: {isa:?} {}",
        planes.o + pixels.len()
    )
}

/// One kernel call: `rows` output pixels (their first taps at `starts`) times the
/// channels from the tile's first, `cols` of them left in the row.
struct Tile<'a> {
    src: *const f32,
    taps: &'a [usize],
    block: usize,
    wt: *const f32,
    lanes: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Image, OnePlane, Planes, Terms, Tile};
    use std::arch::x86_64::*;

    /// The vector operations of the kernels, for one instruction set. Each is inlined
    /// into a function compiled for that set (`image_rows_avx2` and the like), so that
    /// one generic kernel becomes both sets' code.
    pub(super) trait Simd {
        /// Floats per vector.
        const LANES: usize;
        type V: Copy;
        unsafe fn zero() -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        unsafe fn splat(x: f32) -> Self::V;
        /// `a b + c`, rounded once (as gemm's micro-kernels).
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn store(p: *mut f32, v: Self::V);
        /// Stores the first `n` lanes (`1 <= n <= LANES`).
        unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
        /// Loads the first `n` lanes (`1 <= n <= LANES`), the others zero.
        unsafe fn load_first(p: *const f32, n: usize) -> Self::V;
    }

    /// AVX-512F: 16 lanes, 32 registers.
    pub(super) struct Avx512;

    /// AVX2 and FMA: 8 lanes, 16 registers.
    pub(super) struct Avx2;

    /// `Simd` for one instruction set: its vector type, its intrinsics, its masked store.
    macro_rules! simd {
        ($set:ident, $lanes:literal, $v:ty, [$zero:ident, $load:ident, $splat:ident,
         $fma:ident, $add:ident, $store:ident], |$p:ident, $x:ident, $n:ident| $first:block,
         |$lp:ident, $ln:ident| $load_first:block) => {
            impl Simd for $set {
                const LANES: usize = $lanes;
                type V = $v;
                #[inline(always)]
                unsafe fn zero() -> $v {
                    $zero()
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> $v {
                    $load(p)
                }
                #[inline(always)]
                unsafe fn splat(x: f32) -> $v {
                    $splat(x)
                }
                #[inline(always)]
                unsafe fn fma(a: $v, b: $v, c: $v) -> $v {
                    $fma(a, b, c)
                }
                #[inline(always)]
                unsafe fn add(a: $v, b: $v) -> $v {
                    $add(a, b)
                }
                #[inline(always)]
                unsafe fn store(p: *mut f32, v: $v) {
                    $store(p, v)
                }
                #[inline(always)]
                unsafe fn store_first($p: *mut f32, $x: $v, $n: usize) $first
                #[inline(always)]
                unsafe fn load_first($lp: *const f32, $ln: usize) -> $v $load_first
            }
        };
    }

    simd!(
        Avx512,
        16,
        __m512,
        [
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_set1_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            _mm512_storeu_ps
        ],
        |p, v, n| { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v) },
        |p, n| { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p) }
    );

    simd!(
        Avx2,
        8,
        __m256,
        [
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            _mm256_storeu_ps
        ],
        // A whole vector goes without a mask: AMD microcodes AVX2's masked stores.
        |p, v, n| {
            if n == 8 {
                return _mm256_storeu_ps(p, v);
            }
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
            _mm256_maskstore_ps(p, mask, v)
        },
        |p, n| {
            if n == 8 {
                return _mm256_loadu_ps(p);
            }
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes))
        }
    );

    /// The target-feature entry points of a kernel generic over [`Simd`], one for
    /// AVX-512 and one for AVX2: inlined into each, the kernel becomes that set's code.
    macro_rules! entry_points {
        ($kernel:ident($arg:ident: $ty:ty), $avx512:ident, $avx2:ident, $caller:literal) => {
            #[doc = concat!("`", stringify!($kernel), "` for AVX-512.")]
            ///
            /// # Safety
            #[doc = concat!("AVX-512F present; the arguments as ", $caller, " builds them.")]
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $avx512($arg: &$ty, out: &mut [f32]) {
                $kernel::<Avx512>($arg, out)
            }

            #[doc = concat!("`", stringify!($kernel), "` for AVX2.")]
            ///
            /// # Safety
            #[doc = concat!("AVX2 and FMA present; the arguments as ", $caller, " builds them.")]
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn $avx2($arg: &$ty, out: &mut [f32]) {
                $kernel::<Avx2>($arg, out)
            }
        };
    }

    entry_points!(image_rows(image: Image), image_rows_avx512, image_rows_avx2, "`conv`");
    entry_points!(
        gather_image(planes: Planes),
        gather_image_avx512,
        gather_image_avx2,
        "`conv_adjoint`"
    );
    entry_points!(
        column_sums(terms: Terms),
        column_sums_avx512,
        column_sums_avx2,
        "`weight_grad`"
    );
    entry_points!(
        one_plane(plane: OnePlane),
        one_plane_avx512,
        one_plane_avx2,
        "`one_channel_adjoint`"
    );

    /// [`super::one_plane`] for each kernel width, its sums in registers.
    #[inline(always)]
    unsafe fn one_plane<S: Simd>(plane: &OnePlane, split: &mut [f32]) {
        match plane.g.kw {
            1 => one_plane_kw::<S, 1>(plane, split),
            2 => one_plane_kw::<S, 2>(plane, split),
            3 => one_plane_kw::<S, 3>(plane, split),
            4 => one_plane_kw::<S, 4>(plane, split),
            5 => one_plane_kw::<S, 5>(plane, split),
            kw => unreachable!("one_channel_adjoint takes kernels up to 5 wide, not {kw}"),
        }
    }

    #[inline(always)]
    unsafe fn one_plane_kw<S: Simd, const KW: usize>(plane: &OnePlane, split: &mut [f32]) {
        let OnePlane {
            padded,
            owr,
            left,
            w2,
            wt,
            g,
            o,
        } = *plane;
        let (s, pad) = (g.stride as isize, g.pad as isize);
        let stride = g.oh * owr;
        // Where column `kw`'s terms go: the remainder's copy, and the offset in its rows.
        let dest: [(usize, isize); KW] = std::array::from_fn(|kw| {
            let off = kw as isize - pad;
            (
                off.rem_euclid(s) as usize,
                off.div_euclid(s) + left as isize,
            )
        });
        for oy in (0..g.oh).rev() {
            for x0 in (0..owr).step_by(S::LANES).rev() {
                let src = padded.as_ptr().add(oy * owr + x0);
                for kh in 0..g.kh {
                    let iy = (oy * g.stride + kh) as isize - pad;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let taps = wt.as_ptr().add(kh * KW * o);
                    let mut sums = [S::zero(); KW];
                    for oi in 0..o {
                        let v = S::load(src.add(oi * stride));
                        for (kw, sum) in sums.iter_mut().enumerate() {
                            *sum = S::fma(S::splat(*taps.add(kw * o + oi)), v, *sum);
                        }
                    }
                    for (&(r, at), sum) in dest.iter().zip(sums) {
                        let row = (r * g.h + iy as usize) * w2;
                        let d = split.as_mut_ptr().add(row + (x0 as isize + at) as usize);
                        S::store(d, S::add(S::load(d), sum));
                    }
                }
            }
        }
    }

    /// One image's output rows, vectors of channels at a time: tiles of up to 24
    /// accumulators in AVX-512's 32 registers (6 pixels x 4 vectors, gemm's own tile
    /// shape: DCGAN's 64 -> 128 layer in 0.70-0.79 of the patches' one-thread time,
    /// against 0.79-0.93 with tiles of 4 x 4); in AVX2's 16 at most 12 (tiles of 6 and 5
    /// pixels x 2 vectors, [`balanced_rows`]) or 8.
    #[inline(always)]
    unsafe fn image_rows<S: Simd>(image: &Image, dst: &mut [f32]) {
        let (vectors, out, o, starts) = (
            image.lanes / S::LANES,
            dst.as_mut_ptr(),
            image.o,
            image.starts,
        );
        let mut v0 = 0;
        while v0 < vectors {
            let run = |mr: usize, pix: usize| Tile {
                src: image.src.as_ptr(),
                taps: image.taps,
                block: image.block,
                wt: image.wt.as_ptr().add(S::LANES * v0),
                lanes: image.lanes,
                out: out.add(pix * o + S::LANES * v0),
                ldo: o,
                rows: mr.min(starts.len() - pix),
                cols: o - S::LANES * v0,
            };
            v0 += match (S::LANES, vectors - v0) {
                (16, 4..) if fours_fit(starts.len()) => rows_of::<S, 4, 4>(starts, run),
                (16, 4..) => rows_of::<S, 6, 4>(starts, run),
                (16, 2..) => rows_of::<S, 8, 2>(starts, run),
                (_, 2..) => balanced_rows::<S, 2>(starts, run),
                _ => rows_of::<S, 8, 1>(starts, run),
            };
        }
    }

    /// Whether tiles of 4 pixels cover `pixels` for less than tiles of 6, counting a
    /// pixel of a 6-pixel tile at 0.9 of one of a 4-pixel tile (the energy model's 4x4
    /// and 2x2 planes: tiles of 6 computed 18 and 6 pixels for 16 and 4).
    fn fours_fit(pixels: usize) -> bool {
        pixels.div_ceil(4) * 4 * 10 < pixels.div_ceil(6) * 6 * 9
    }

    /// Tiles of `MR` pixels x `NV` vectors over all the pixels; `NV`, the vectors done.
    #[inline(always)]
    unsafe fn rows_of<'a, S: Simd, const MR: usize, const NV: usize>(
        starts: &[usize],
        run: impl Fn(usize, usize) -> Tile<'a>,
    ) -> usize {
        for pix in (0..starts.len()).step_by(MR) {
            tile::<S, MR, NV>(run(MR, pix), &starts[pix..]);
        }
        NV
    }

    /// Tiles of at most 6 pixels x `NV` vectors over all the pixels, as few as tiles of 6
    /// would be, sized 6 and 5 (or less) so that none computes pixels it does not store:
    /// a tile runs one fused multiply-add chain per accumulator (`MR NV` of them), and
    /// below 8 (AVX2's latency times its two pipes) costs 4 cycles a term whatever `MR`,
    /// else `MR NV / 2`. A plane of 49 pixels (DCGAN's and InfoGAN's 7x7) took 9 tiles of 6,
    /// the last storing one pixel (54 pixels' work); now 4 of 6 and 5 of 5 (49). One
    /// thread, in-process against tiles of 6, batches of 64 and 256: DCGAN's 3x3 and
    /// 32 -> 64 layers 1.06-1.10x, the energy model's 8x8 and 4x4 layers 1.08x and
    /// 1.13-1.24x, InfoGAN's 64 -> 128 (sums of two blocks, weights streamed from L2)
    /// 0.98-1.00x. `NV`, the vectors done.
    #[inline(always)]
    unsafe fn balanced_rows<'a, S: Simd, const NV: usize>(
        starts: &[usize],
        run: impl Fn(usize, usize) -> Tile<'a>,
    ) -> usize {
        let mut pix = 0;
        for mr in super::tile_sizes(starts.len(), 6) {
            let (tl, at) = (run(mr, pix), &starts[pix..]);
            match mr {
                6 => tile::<S, 6, NV>(tl, at),
                5 => tile::<S, 5, NV>(tl, at),
                4 => tile::<S, 4, NV>(tl, at),
                3 => tile::<S, 3, NV>(tl, at),
                2 => tile::<S, 2, NV>(tl, at),
                _ => tile::<S, 1, NV>(tl, at),
            }
            pix += mr;
        }
        NV
    }

    /// `MR` pixels x `NV` vectors: for each tap in order, one weight row and a broadcast
    /// pixel per output pixel, fused into the running sums.
    ///
    /// # Safety
    /// `S`'s instructions present; `t` as [`super::conv`] builds it, `starts` holding at
    /// least `t.rows` entries.
    #[inline(always)]
    unsafe fn tile<S: Simd, const MR: usize, const NV: usize>(t: Tile, starts: &[usize]) {
        // Pixels past the last are computed from the last one's taps and not stored.
        let at: [usize; MR] = std::array::from_fn(|j| starts[j.min(t.rows - 1)]);
        for (b, taps) in t.taps.chunks(t.block).enumerate() {
            let mut acc = [[S::zero(); NV]; MR];
            let wt = t.wt.add(b * t.block * t.lanes);
            for (kk, &tap) in taps.iter().enumerate() {
                let x = t.src.add(tap);
                let w = wt.add(kk * t.lanes);
                let mut wv = [S::zero(); NV];
                for (v, wv) in wv.iter_mut().enumerate() {
                    *wv = S::load(w.add(S::LANES * v));
                }
                for (j, acc) in acc.iter_mut().enumerate() {
                    let a = S::splat(*x.add(at[j]));
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = S::fma(a, wv, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate().take(t.rows) {
                for (v, &acc) in acc.iter().enumerate() {
                    let left = t.cols.saturating_sub(S::LANES * v).min(S::LANES);
                    let d = t.out.add(j * t.ldo + S::LANES * v);
                    match (left, b) {
                        (0, _) => {}
                        (_, 0) => S::store_first(d, acc, left),
                        _ => S::store_first(d, S::add(S::load_first(d, left), acc), left),
                    }
                }
            }
        }
    }

    /// A tile's columns, vectors of `m` at a time: 4 x 6 accumulators in AVX-512's 32
    /// registers, 2 x 6 in AVX2's 16.
    #[inline(always)]
    unsafe fn column_sums<S: Simd>(terms: &Terms, sums: &mut [f32]) {
        let vectors = terms.ml / S::LANES;
        let mut v0 = 0;
        while v0 < vectors {
            v0 += match (S::LANES, vectors - v0) {
                (16, 4..) => column_tile::<S, 4>(terms, v0, sums),
                (_, 2..) => column_tile::<S, 2>(terms, v0, sums),
                _ => column_tile::<S, 1>(terms, v0, sums),
            };
        }
    }

    /// `NV` vectors of `m` x the tile's columns: for each output pixel in order, the
    /// gradient's vectors times each column's broadcast pixel, fused into the running
    /// sums; `NV`, the vectors done.
    ///
    /// # Safety
    /// `S`'s instructions present; `terms` as [`super::weight_grad`] builds them.
    #[inline(always)]
    unsafe fn column_tile<S: Simd, const NV: usize>(
        terms: &Terms,
        v0: usize,
        sums: &mut [f32],
    ) -> usize {
        const NR: usize = super::WG_COLS;
        let (xp, at, ml) = (terms.xp.as_ptr(), terms.at.as_ptr(), terms.ml);
        let mut acc = [[S::zero(); NR]; NV];
        for (qi, &corner) in terms.corners.iter().enumerate() {
            let a = at.add(qi * ml + S::LANES * v0);
            let mut av = [S::zero(); NV];
            for (v, av) in av.iter_mut().enumerate() {
                *av = S::load(a.add(S::LANES * v));
            }
            let x = xp.add(corner);
            for c in 0..NR {
                let b = S::splat(*x.add(terms.offs[c]));
                for (acc, &av) in acc.iter_mut().zip(&av) {
                    acc[c] = S::fma(av, b, acc[c]);
                }
            }
        }
        let out = sums.as_mut_ptr();
        for c in 0..sums.len() / ml {
            for (v, acc) in acc.iter().enumerate() {
                let d = out.add(c * ml + S::LANES * (v0 + v));
                match terms.add {
                    true => S::store(d, S::add(S::load(d), acc[c])),
                    false => S::store(d, acc[c]),
                }
            }
        }
        NV
    }

    /// One image of [`super::conv_adjoint`], added into `pixels` (`[h w, cl]`, zeroed).
    #[inline(always)]
    unsafe fn gather_image<S: Simd>(planes: &Planes, pixels: &mut [f32]) {
        let &Planes {
            padded,
            owp,
            left,
            wk,
            g,
            o,
            cl,
        } = planes;
        let s = g.stride;
        let plane = g.oh * owp;
        // (the tap's weights, the padded gradient at the class's first pixel's column)
        let mut taps: Vec<(*const f32, *const f32)> = Vec::with_capacity(g.kh * g.kw);
        for iy in 0..g.h {
            for px in 0..s.min(g.w) {
                taps.clear();
                for ky in 0..g.kh {
                    let Some(ny) = (iy + g.pad).checked_sub(ky) else {
                        continue;
                    };
                    if ny % s != 0 || ny / s >= g.oh {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let nx = (px + g.pad) as isize - kx as isize;
                        if nx.rem_euclid(s as isize) != 0 {
                            continue;
                        }
                        let col = (left as isize + nx.div_euclid(s as isize)) as usize;
                        taps.push((
                            wk.as_ptr().add((ky * g.kw + kx) * o * cl),
                            padded.as_ptr().add((ny / s) * owp + col),
                        ));
                    }
                }
                if taps.is_empty() {
                    continue;
                }
                let count = (g.w - px).div_ceil(s);
                let out = pixels.as_mut_ptr().add((iy * g.w + px) * cl);
                let mut cv = 0;
                while cv < cl / S::LANES {
                    let nv = (cl / S::LANES - cv).min(2);
                    // AVX-512: tiles of `TILE_PIXELS` x 2 vectors, 16 accumulators in its
                    // 32 registers (a last single vector, in either set: of `TILE_PIXELS`
                    // x 1), each storing its `size` pixels. AVX2's pairs of vectors: at most
                    // 12 accumulators in its 16, tiles sized to the class (at least 5
                    // pixels: `conv_adjoint` leaves shorter rows to gemm), so that a class
                    // of 7 (a 14-pixel row at stride 2) takes tiles of 4 and 3, not two of
                    // 4 (DCGAN's 64 -> 32 transposed layer 1.025-1.037x faster, one thread,
                    // batches of 64 and 256).
                    let pair = S::LANES == 8 && nv == 2;
                    let most = if pair { 6 } else { super::TILE_PIXELS };
                    let mut t0 = 0;
                    for size in super::tile_sizes(count, most) {
                        let run = TileT {
                            taps: &taps,
                            first: t0,
                            rows: size,
                            o,
                            cl,
                            plane,
                            cv: S::LANES * cv,
                            out,
                            step: s * cl,
                        };
                        match (pair, nv, size) {
                            (true, _, 6) => tile_t::<S, 6, 2>(run),
                            (true, _, 5) => tile_t::<S, 5, 2>(run),
                            (true, _, 4) => tile_t::<S, 4, 2>(run),
                            (true, _, 3) => tile_t::<S, 3, 2>(run),
                            (true, _, 2) => tile_t::<S, 2, 2>(run),
                            (true, _, _) => tile_t::<S, 1, 2>(run),
                            (false, 2, _) => tile_t::<S, { super::TILE_PIXELS }, 2>(run),
                            _ => tile_t::<S, { super::TILE_PIXELS }, 1>(run),
                        }
                        t0 += size;
                    }
                    cv += nv;
                }
            }
        }
    }

    /// A tile of [`gather_image`]: pixels `first..first + rows` of a row's class (each
    /// `step` floats after the last in `out`), channels from `cv`.
    struct TileT<'a> {
        taps: &'a [(*const f32, *const f32)],
        first: usize,
        rows: usize,
        o: usize,
        cl: usize,
        plane: usize,
        cv: usize,
        out: *mut f32,
        step: usize,
    }

    /// `MR` pixels x `NV` vectors of channels of [`gather_image`] (the first `t.rows`
    /// stored): for each tap in kernel order, its column entries summed over the output
    /// channels in registers, then added to the pixels' sums.
    #[inline(always)]
    unsafe fn tile_t<S: Simd, const MR: usize, const NV: usize>(t: TileT) {
        for &(wp, gp) in t.taps {
            let (wp, gp) = (wp.add(t.cv), gp.add(t.first));
            let mut sums = [[S::zero(); NV]; MR];
            for oi in 0..t.o {
                let mut w = [S::zero(); NV];
                for (v, w) in w.iter_mut().enumerate() {
                    *w = S::load(wp.add(oi * t.cl + S::LANES * v));
                }
                let gr = gp.add(oi * t.plane);
                for (j, sums) in sums.iter_mut().enumerate() {
                    let x = S::splat(*gr.add(j));
                    for (sum, &w) in sums.iter_mut().zip(&w) {
                        *sum = S::fma(w, x, *sum);
                    }
                }
            }
            for (j, sums) in sums.iter().enumerate().take(t.rows) {
                let at = t.out.add((t.first + j) * t.step + t.cv);
                for (v, &sum) in sums.iter().enumerate() {
                    let d = at.add(S::LANES * v);
                    S::store(d, S::add(S::load(d), sum));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::kernels::{geometry, patches, product, Mat};

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

    fn assert_same_bits(geometry: usize, want: &[f32], got: &[f32]) {
        assert_eq!(want.len(), got.len(), "geometry {geometry}: lengths");
        let same = want
            .iter()
            .zip(got)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "geometry {geometry}: {:?} vs {:?}",
            &want[..4],
            &got[..4]
        );
    }

    /// Every pixel in exactly one tile, as few tiles as `most` allows, none over `most`
    /// nor more than one pixel larger than another (any CPU: no kernel runs).
    #[test]
    fn tiles_cover_the_pixels_evenly() {
        for most in 1..=8 {
            for n in 0..=300 {
                let sizes: Vec<usize> = tile_sizes(n, most).collect();
                assert_eq!(
                    sizes.iter().sum::<usize>(),
                    n,
                    "{n} pixels, tiles of {most}"
                );
                assert_eq!(sizes.len(), n.div_ceil(most), "{n} pixels, tiles of {most}");
                assert!(
                    sizes.iter().all(|&s| (1..=most).contains(&s))
                        && sizes.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1),
                    "{n} pixels, tiles of {most}: {sizes:?}"
                );
            }
        }
    }

    /// The direct convolution is the patches' product (then the bias) bit for bit, on
    /// geometries with padding, strides, channel counts off the vector width, pixels
    /// past a tile and sums of several of gemm's blocks.
    #[test]
    fn direct_rows_are_the_patch_product_bit_for_bit() {
        if Isa::detect().is_none() {
            eprintln!("skipped: neither AVX-512 nor AVX2 on this CPU");
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
            // Sums of several blocks: DCGAN's 64 -> 128 layer, the same with 64 outputs,
            // a last block of 128 terms and channels off the vector width (with 70 and
            // 50 outputs).
            (16, 64, 14, 14, 4, 2, 1, 128),
            (16, 64, 14, 14, 4, 2, 1, 64),
            (6, 40, 9, 9, 4, 1, 2, 20),
            (4, 130, 6, 6, 3, 1, 1, 70),
            (4, 130, 6, 6, 3, 1, 1, 50),
            // Planes of 1, 2 and 3 pixels (AVX2's tiles of their own size).
            (32, 8, 3, 3, 3, 1, 0, 16),
            (32, 4, 3, 4, 3, 1, 0, 16),
            (32, 4, 3, 5, 3, 1, 0, 24),
            // 7 and 9 pixels: tiles of 4 and 3, of 5 and 4.
            (32, 4, 3, 9, 3, 1, 0, 16),
            (32, 4, 3, 11, 3, 1, 0, 16),
        ]
        .iter()
        .enumerate()
        {
            let g = geometry(n, c, (h, wd), kw, stride, pad);
            let (k, np) = (g.k(), g.cols());
            let x = filled(n * c * h * wd, 2 * i as u32 + 1);
            let w = filled(o * k, 2 * i as u32 + 2);
            let b = filled(o, 2 * i as u32 + 3);
            let yt = product(Mat::rows(&patches(&x, &g), k), Mat::t(&w, k), np, o, k);
            let want = kernels::transpose_each(&yt, n, np / n, o, Some(&b));
            let got = conv(&x, &g, &w, &b, o).expect("these products' blocks are known");
            assert_same_bits(i, &want, &got);
            // What the layers whose weight is past 256 KB try first on AVX2.
            if let Some(got) = kernels::patch_convolve(&x, &g, &w, Some(&b), o) {
                assert_same_bits(i, &want, &got);
            }
        }
    }

    /// The gathered adjoint is col2im of the columns' product bit for bit, one channel
    /// or many; rows of 8 and 4 pixels at stride 2 of several channels are left to gemm.
    #[test]
    fn gathered_adjoints_are_col2im_of_the_product_bit_for_bit() {
        if Isa::detect().is_none() {
            eprintln!("skipped: neither AVX-512 nor AVX2 on this CPU");
            return;
        }
        // (n, c, h, w, k, stride, pad, o)
        let mut declined = Vec::new();
        for (i, &(n, c, h, wd, kw, stride, pad, o)) in [
            (32, 16, 16, 16, 3, 2, 1, 32),
            (32, 32, 8, 8, 3, 2, 1, 64),
            (32, 64, 4, 4, 3, 2, 1, 64),
            (8, 64, 14, 14, 4, 2, 1, 128),
            (5, 17, 9, 7, 3, 1, 1, 17),
            (3, 40, 11, 20, 5, 3, 2, 20),
            (2, 16, 6, 6, 2, 1, 0, 3),
            (4, 96, 23, 21, 5, 2, 0, 24),
            // One channel: the energy model's critic, DCGAN's critic and generator's last
            // layer, strides 1-3, rows of several vectors, kernels 2-5 wide.
            (32, 1, 28, 28, 5, 2, 4, 16),
            (8, 1, 28, 28, 4, 2, 1, 32),
            (5, 1, 28, 28, 4, 2, 1, 64),
            (4, 1, 9, 13, 3, 1, 1, 7),
            (3, 1, 10, 10, 2, 1, 0, 5),
            (2, 1, 12, 11, 5, 3, 2, 9),
            (2, 1, 40, 40, 3, 1, 1, 6),
            (2, 1, 70, 70, 4, 2, 1, 5),
        ]
        .iter()
        .enumerate()
        {
            let g = geometry(n, c, (h, wd), kw, stride, pad);
            let (k, np, p) = (g.k(), g.cols(), g.oh * g.ow);
            let grad = filled(n * o * p, 2 * i as u32 + 1);
            let w = filled(o * k, 2 * i as u32 + 2);
            let gt = kernels::swap01(&grad, n, o, p, None);
            let dcols = product(Mat::t(&w, k), Mat::rows(&gt, np), k, np, o);
            let want = kernels::col2im(&dcols, &g);
            // Rows of 8 and 4 pixels at stride 2: classes of 4 and 2 are left to gemm (one
            // channel has vectors of pixels, not of channels, and none).
            let small = c > 1 && wd.div_ceil(stride) < 6;
            match conv_adjoint(&grad, &w, &g, o) {
                Some(_) if small => panic!("geometry {i}: small classes"),
                Some(got) => assert_same_bits(i, &want, &got),
                None if small => {}
                // AVX2 leaves the layers whose gradient planes outgrow 32 KB to gemm.
                None if Isa::detect() == Some(Isa::Avx2) => declined.push(i),
                None => panic!("geometry {i}: this product sums in order"),
            }
        }
        assert!(declined.len() <= 1, "declined {declined:?}");
    }

    /// The weight gradient read from the padded images is the whole patch matrix's
    /// product, bit for bit, overwriting or adding: DCGAN's 64 -> 128 layer (several of
    /// gemm's blocks), gradient rows off the vector width, strides 1-2, padding 0-2, last
    /// tiles of fewer than 6 columns, the gradient in the output's layout (runs of pixels
    /// that end with their image inside a block).
    #[test]
    fn weight_gradients_from_the_image_are_the_whole_products_bits() {
        if Isa::detect().is_none() {
            eprintln!("skipped: neither AVX-512 nor AVX2 on this CPU");
            return;
        }
        let mut s = 0x5851_f42d_4c95_7f2du64;
        // (n, c, h, k, stride, pad, m)
        for (i, &(n, c, h, kw, stride, pad, m)) in [
            (16, 64, 14, 4, 2, 1, 128),
            (9, 16, 9, 3, 1, 1, 70),
            (5, 7, 12, 5, 1, 2, 70),
            (3, 13, 16, 3, 2, 0, 65),
        ]
        .iter()
        .enumerate()
        {
            let g = geometry(n, c, (h, h), kw, stride, pad);
            let (k, np) = (g.k(), g.cols());
            let x = kernels::values(&mut s, n * c * h * h);
            let a = kernels::values(&mut s, m * np);
            let whole = patches(&x, &g);
            // The gradient `[m, np]` in the output's layout `[n, m, p]`.
            let grad = kernels::swap01(&a, m, n, np / n, None);
            for accumulate in [false, true] {
                let start = kernels::values(&mut s, m * k);
                let mut want = start.clone();
                let c = Mat::rows(&whole, k);
                kernels::matmul(&mut want, accumulate, Mat::rows(&a, np), c, m, k, np);
                let mut got = start.clone();
                assert!(
                    weight_grad(&mut got, accumulate, &grad, &x, &g, m),
                    "geometry {i}: blocks known"
                );
                assert_same_bits(i, &want, &got);
            }
        }
        // The first layers' 16 columns, gradients of fewer than 64 rows and planes of
        // fewer than 49 pixels are left to the patches.
        for (c, h, m) in [(1, 28, 64), (16, 16, 32), (64, 4, 64)] {
            let g = geometry(8, c, (h, h), 4, 2, 1);
            let (a, x) = (vec![0.0; m * g.cols()], vec![0.0; 8 * c * h * h]);
            let mut dst = vec![0.0; m * g.k()];
            assert!(!weight_grad(&mut dst, false, &a, &x, &g, m), "{g:?}");
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
