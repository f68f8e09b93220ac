//! Fast CPU training ops as candle custom ops, each with its analytic backward pass.
//!
//! candle's stock CPU path is slow exactly where GANs spend their time: its transposed
//! convolution is a naive loop (and the backward of every convolution uses one), batch
//! norm and leaky ReLU are built from a dozen elementwise ops each way, and a linear
//! layer materialises the transpose of its weight gradient. The ops here do each layer
//! in one pass: convolutions as unfolded patches (or im2col) and col2im plus one matrix
//! product per gradient, matrix products with strided operands instead of copied
//! transposes, batch norm and leaky ReLU as single loops. Gradients are only computed
//! for inputs that need them (a data batch or detached fakes get none).
//!
//! Every function falls back to candle's own ops for tensors that are not `f32` on the
//! CPU (CUDA, Metal), so models use these unconditionally. The tests in
//! `tests/ops.rs` check values and gradients against that fallback.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor,
    D,
};

use crate::fast::grads::{self, Need};
use crate::fast::kernels::{self, ConvGeom, Mat};
use crate::fast::packed;

/// True where the custom kernels run: `f32` tensors on the CPU.
fn on_fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The contiguous `f32` data of a CPU storage under `layout`.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("gan-core ops need contiguous inputs")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// Runs `f` on the data of CPU tensors (made contiguous first).
fn with_data<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let owned: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (g, l) in &guards {
        match &**g {
            Storage::Cpu(s) => slices.push(data(s, l)?),
            _ => bail!("gan-core ops: backward on a non-CPU tensor"),
        }
    }
    f(&slices)
}

fn cpu(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// The gradient of an input, computed only where the backward pass needs it
/// ([`grads::need`]): none where nothing upstream takes one (or `t` is a variable the
/// pass does not want), zeros where only variables it does not want lie upstream.
fn wanted(t: &Tensor, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    wanted_or_collected(t, || f().map(Some))
}

/// [`wanted`] for a weight's gradient, which `f` may write into the collector instead
/// of returning it.
fn wanted_or_collected(
    t: &Tensor,
    f: impl FnOnce() -> Result<Option<Tensor>>,
) -> Result<Option<Tensor>> {
    match grads::need(t) {
        Need::No => Ok(None),
        Need::Zeros => t.zeros_like().map(Some),
        Need::Yes => f(),
    }
}

// ---------------------------------------------------------------- linear

/// `x W^T + b`, with the weight stored `[out, in]` (a layer's own) or, transposed ahead,
/// `[in, out]` row-major (a copy [`crate::fast::layers::inference`] keeps, which gemm
/// reads without repacking it on every product).
struct LinearOp {
    w_in_out: bool,
    /// The activation applied to the output in place: one tensor, and one gradient the
    /// backward pass adds up, fewer than the two ops.
    act: Fused,
}

impl LinearOp {
    /// The weight as the `[in, out]` operand of `x W^T`, from its data, and `out`.
    fn w_t<'a>(&self, w: &'a [f32], dims: (usize, usize)) -> (Mat<'a>, usize) {
        if self.w_in_out {
            (Mat::rows(w, dims.1), dims.1)
        } else {
            (Mat::t(w, dims.1), dims.0)
        }
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "gan-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let (n, i) = l1.shape().dims2()?;
        let (wt, o) = self.w_t(w, l2.shape().dims2()?);
        let mut y: Vec<f32> = Vec::with_capacity(n * o);
        for _ in 0..n {
            y.extend_from_slice(b);
        }
        kernels::matmul(&mut y, true, Mat::rows(x, i), wt, n, o, i);
        self.act.activate(&mut y);
        Ok((CpuStorage::F32(y), (n, o).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i) = x.dims2()?;
        with_data(&[x, w, grad, res], |d| {
            let (xd, wd) = (d[0], d[1]);
            let g = &*self.act.through(d[3], d[2])?;
            let (_, o) = self.w_t(wd, w.dims2()?);
            // dx = g W: W [out, in] row-major, or the transpose of the [in, out] copy.
            let w_op = if self.w_in_out {
                Mat::t(wd, o)
            } else {
                Mat::rows(wd, i)
            };
            let dx = wanted(x, || {
                cpu(kernels::product(Mat::rows(g, o), w_op, n, i, o), (n, i))
            })?;
            // dW = g^T x for [out, in], x^T g for [in, out].
            let (a, c, rows, cols) = if self.w_in_out {
                (Mat::t(xd, i), Mat::rows(g, o), i, o)
            } else {
                (Mat::t(g, o), Mat::rows(xd, i), o, i)
            };
            let dw = wanted_or_collected(w, || {
                if grads::collect(w, |dst, acc| kernels::matmul(dst, acc, a, c, rows, cols, n)) {
                    Ok(None)
                } else {
                    cpu(kernels::product(a, c, rows, cols, n), (rows, cols)).map(Some)
                }
            })?;
            let db = wanted(b, || cpu(kernels::channel_sums(g, n, o, 1), o))?;
            Ok((dx, dw, db))
        })
    }
}

/// `x W^T + b` for `x [N, in]`, `W [out, in]` (PyTorch's and candle-nn's layout), `b [out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    linear_with(x, w, b, None)
}

/// `act(linear(x, w, b))` as one op where it can be (the same bits): the activation
/// written over the product's output, its gradient taken inside the op.
pub fn linear_act(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    linear_with(x, w, b, Some(act))
}

fn linear_with(x: &Tensor, w: &Tensor, b: &Tensor, act: Option<Act>) -> Result<Tensor> {
    if on_fast_path(x) && x.rank() == 2 {
        let (act, after) = Fused::split(act, [x, w, b]);
        let y = x.contiguous()?.apply_op3_arc(
            w,
            b,
            Arc::new(Box::new(LinearOp {
                w_in_out: false,
                act,
            })),
        )?;
        then_act(y, after)
    } else {
        let y = x.broadcast_matmul(&w.t()?)?.broadcast_add(b)?;
        then_act(y, act)
    }
}

/// The transpose of a matrix as a new contiguous tensor, without gradient (for weights
/// prepared once: [`linear_in_out`]'s operand). A tiled copy on the CPU, where candle's
/// strided copy took tens of milliseconds for InfoGAN's 6272 x 1024 weight.
pub fn transposed(w: &Tensor) -> Result<Tensor> {
    if !on_fast_path(w) {
        return w.t()?.contiguous();
    }
    let (rows, cols) = w.dims2()?;
    with_data(&[w], |d| {
        cpu(kernels::transpose(d[0], rows, cols), (cols, rows))
    })
}

/// [`linear`] with the weight given transposed, `wt [in, out]` (contiguous): `x wt + b`.
/// The same sums as [`linear`] of `wt^T`, without gemm repacking a strided weight on
/// every product: faster when one transposed copy serves many products.
pub fn linear_in_out(x: &Tensor, wt: &Tensor, b: &Tensor) -> Result<Tensor> {
    if on_fast_path(x) && x.rank() == 2 {
        x.contiguous()?.apply_op3_arc(
            &wt.contiguous()?,
            b,
            Arc::new(Box::new(LinearOp {
                w_in_out: true,
                act: Fused::None,
            })),
        )
    } else {
        x.broadcast_matmul(wt)?.broadcast_add(b)
    }
}

/// A linear layer's weight `[out, in]` in the form its products read fastest when it
/// serves many batches unchanged ([`crate::fast::layers::inference`]): packed for this
/// CPU's AVX-512 or AVX2 kernels (a 1-D tensor, `crate::fast::packed`), or where there
/// are none, or off the CPU, the transposed copy of [`transposed`]. No gradient.
pub fn prepare_linear(w: &Tensor) -> Result<Tensor> {
    match packed::Isa::detect() {
        Some(isa) if on_fast_path(w) => {
            let (n, k) = w.dims2()?;
            with_data(&[w], |d| {
                let len = packed::packed_len(n, k, isa);
                cpu(packed::pack(d[0], n, k, isa), len)
            })
        }
        _ => transposed(w),
    }
}

/// `x W^T + b` with `prepared` made by [`prepare_linear`] from `w`, then with `leaky =
/// Some(slope)` [`leaky_relu`] (applied as the packed product writes its output: one pass,
/// the same bits as the two ops). Packed weights give the sums in another order than
/// [`linear`] (within a few units in the last place), so evaluations may differ from a
/// training's forward pass in their last digits; the gradient of `x` is exact, the weights
/// get none.
pub fn linear_prepared(
    x: &Tensor,
    w: &Tensor,
    prepared: &Tensor,
    b: &Tensor,
    leaky: Option<f64>,
) -> Result<Tensor> {
    let isa = packed::Isa::detect();
    // The gradient reads the slope off the output's sign: a negative slope would flip it.
    let fused = leaky.is_none_or(|a| a >= 0.0);
    match (isa, prepared.rank()) {
        (Some(isa), 1) if fused && on_fast_path(x) && x.rank() == 2 => {
            x.contiguous()?.apply_op3_arc(
                prepared,
                b,
                Arc::new(Box::new(PackedLinearOp {
                    w: w.detach(),
                    isa,
                    leaky: leaky.map(|a| a as f32),
                })),
            )
        }
        _ => then_act(linear_in_out(x, prepared, b)?, leaky.map(Act::Leaky)),
    }
}

/// [`linear_prepared`]'s op: the packed weight in, the layer's own weight kept for the
/// input's gradient, and the fused activation's slope.
struct PackedLinearOp {
    w: Tensor,
    isa: packed::Isa,
    leaky: Option<f32>,
}

impl CustomOp3 for PackedLinearOp {
    fn name(&self) -> &'static str {
        "gan-linear-packed"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, p, b) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let (m, k) = l1.shape().dims2()?;
        let (n, wk) = self.w.dims2()?;
        if wk != k || b.len() != n || p.len() != packed::packed_len(n, k, self.isa) {
            bail!(
                "packed linear: input [{m}, {k}], weight [{n}, {wk}], bias {}",
                b.len()
            )
        }
        let y = packed::product(x, (m, k, n), p, b, self.leaky, self.isa);
        Ok((CpuStorage::F32(y), (m, n).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _packed: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = self.w.dim(0)?;
        let dx = wanted(x, || {
            with_data(&[&self.w, grad, res], |d| {
                // Through the activation first: with a slope >= 0 the output is positive
                // exactly where its input was.
                let g = match self.leaky {
                    Some(a) => Cow::Owned(leaky_back(d[2], d[1], a)),
                    None => Cow::Borrowed(d[1]),
                };
                cpu(
                    kernels::product(Mat::rows(&g, n), Mat::rows(d[0], k), m, k, n),
                    (m, k),
                )
            })
        })?;
        Ok((dx, None, None))
    }
}

// ---------------------------------------------------------------- convolutions

/// Stride and padding of a square-kernel convolution (dilation 1, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Step between kernel positions.
    pub stride: usize,
    /// Zeros added on each side of the input.
    pub padding: usize,
    /// Extra rows and columns on one side of a transposed convolution's output (less
    /// than `stride`); ignored by ordinary convolutions.
    pub output_padding: usize,
}

impl Default for ConvSpec {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            output_padding: 0,
        }
    }
}

fn conv_geom(x: &[usize], w: &[usize], spec: ConvSpec) -> Result<ConvGeom> {
    let [n, c, h, wd] = x else {
        bail!("conv2d input must be [N, C, H, W], got {x:?}")
    };
    let [_, wc, kh, kw] = w else {
        bail!("conv2d kernel must be [O, C, KH, KW], got {w:?}")
    };
    if c != wc || spec.stride == 0 || h + 2 * spec.padding < *kh || wd + 2 * spec.padding < *kw {
        bail!("conv2d: input {x:?} does not fit kernel {w:?} with {spec:?}")
    }
    Ok(ConvGeom {
        n: *n,
        c: *c,
        h: *h,
        w: *wd,
        kh: *kh,
        kw: *kw,
        stride: spec.stride,
        pad: spec.padding,
        oh: (h + 2 * spec.padding - kh) / spec.stride + 1,
        ow: (wd + 2 * spec.padding - kw) / spec.stride + 1,
    })
}

struct Conv2dOp {
    spec: ConvSpec,
    /// The activation applied to the output in place (as [`LinearOp`]'s).
    act: Fused,
    /// The unfolded input of the forward pass, kept for the weight gradient when the
    /// weight wants one (the backward pass would otherwise rebuild it).
    unfolded: Option<Mutex<Option<Unfolded>>>,
}

/// A convolution's input unfolded for its products: patch-major ([`kernels::patches`],
/// `[N*P, K]`) for kernels of several output channels, column-major
/// ([`kernels::im2col`], `[K, N*P]`) for one. Both give the same bits as each other
/// except with a single output channel, where gemm takes its matrix-vector path and
/// sums in another order by layout; that case keeps the column layout it always had.
struct Unfolded {
    data: Vec<f32>,
    patch_major: bool,
}

impl Unfolded {
    fn new(x: &[f32], g: &ConvGeom, out_channels: usize) -> Self {
        let patch_major = out_channels > 1;
        let data = if patch_major {
            kernels::patches(x, g)
        } else {
            kernels::im2col(x, g)
        };
        Self { data, patch_major }
    }

    /// The operand `[K, N*P]` (the transpose of the patches, without copying).
    fn cols(&self, g: &ConvGeom) -> Mat<'_> {
        if self.patch_major {
            Mat::t(&self.data, g.k())
        } else {
            Mat::rows(&self.data, g.cols())
        }
    }

    /// `y [N, O, P] = W x cols (+ b)`, `W` row-major `[O, K]`.
    fn convolve(&self, w: &[f32], b: Option<&[f32]>, o: usize, g: &ConvGeom) -> Vec<f32> {
        let (k, np, p) = (g.k(), g.cols(), g.oh * g.ow);
        if self.patch_major {
            // [N*P, O] = patches x W^T, then each image's [P, O] to [O, P].
            let yt = kernels::product(Mat::rows(&self.data, k), Mat::t(w, k), np, o, k);
            kernels::transpose_each(&yt, g.n, p, o, b)
        } else {
            let y = kernels::product(Mat::rows(w, k), self.cols(g), o, np, k);
            kernels::swap01(&y, o, g.n, p, b)
        }
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "gan-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let g = conv_geom(l1.dims(), l2.dims(), self.spec)?;
        let o = l2.dims()[0];
        // Without a weight gradient to come, or one formed from blocks of patches
        // ([`kernels::patch_product`]), the patches have no use after the product: read
        // the image in place (the same bits).
        let blocked = kernels::depth_block(o, g.k(), g.cols()).is_some();
        let direct = match self.unfolded {
            Some(_) if !blocked => None,
            _ if super::direct::prefers_patches(o, g.k()) => {
                kernels::patch_convolve(x, &g, w, Some(b), o)
                    .or_else(|| super::direct::conv(x, &g, w, b, o))
            }
            _ => super::direct::conv(x, &g, w, b, o)
                .or_else(|| kernels::patch_convolve(x, &g, w, Some(b), o)),
        };
        let mut y = match direct {
            Some(y) => y,
            None => {
                let unfolded = Unfolded::new(x, &g, o);
                let y = unfolded.convolve(w, Some(b), o, &g);
                if let Some(keep) = &self.unfolded {
                    *keep.lock().unwrap() = Some(unfolded);
                }
                y
            }
        };
        self.act.activate(&mut y);
        Ok((CpuStorage::F32(y), (g.n, o, g.oh, g.ow).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = conv_geom(x.dims(), w.dims(), self.spec)?;
        let (o, np, p) = (w.dim(0)?, g.cols(), g.oh * g.ow);
        let kept = self
            .unfolded
            .as_ref()
            .and_then(|c| c.lock().unwrap().take());
        with_data(&[x, w, grad, res], |d| {
            let (xd, wd) = (d[0], d[1]);
            let gr = &*self.act.through(d[3], d[2])?;
            // [N, O, P] -> [O, N*P], the layout of the forward product, where a kernel
            // needs it.
            let swapped = std::cell::OnceCell::new();
            let gt = || swapped.get_or_init(|| kernels::swap01(gr, g.n, o, p, None));
            let db = wanted(b, || cpu(kernels::channel_sums(gr, g.n, o, p), o))?;
            let dw = wanted_or_collected(w, || {
                if kept.is_none() && kernels::depth_block(o, g.k(), np).is_some() {
                    // dW = g x patches, from blocks of patch rows.
                    return patch_weight_grad(w, gr, xd, &g, o);
                }
                let unfolded = kept.unwrap_or_else(|| Unfolded::new(xd, &g, o));
                // dW = g x cols^T
                let (a, c) = (Mat::rows(gt(), np), unfolded.cols(&g).transposed());
                if grads::collect(w, |dst, acc| kernels::matmul(dst, acc, a, c, o, g.k(), np)) {
                    Ok(None)
                } else {
                    cpu(kernels::product(a, c, o, g.k(), np), w.shape()).map(Some)
                }
            })?;
            let dx = wanted(x, || {
                let dx = super::direct::conv_adjoint(gr, wd, &g, o)
                    .or_else(|| kernels::col2im_of_product(wd, gt(), &g, o))
                    .unwrap_or_else(|| {
                        let dcols =
                            kernels::product(Mat::t(wd, g.k()), Mat::rows(gt(), np), g.k(), np, o);
                        kernels::col2im(&dcols, &g)
                    });
                cpu(dx, x.shape())
            })?;
            Ok((dx, dw, db))
        })
    }
}

/// The weight gradient `a [m, N*P] x patches(image)`, `a` given as `[N, m, P]` (the
/// output's layout), read from the image in place ([`super::direct::weight_grad`]) or
/// from blocks of patch rows ([`kernels::patch_product`], `a` transposed to `[m, N*P]`
/// first), whose blocks the caller has checked with [`kernels::depth_block`]; written
/// into the collector's buffer where one is active.
fn patch_weight_grad(
    w: &Tensor,
    a: &[f32],
    image: &[f32],
    g: &ConvGeom,
    m: usize,
) -> Result<Option<Tensor>> {
    let write = |dst: &mut [f32], acc| {
        if !super::direct::weight_grad(dst, acc, a, image, g, m) {
            let at = kernels::swap01(a, g.n, m, g.oh * g.ow, None);
            let rows = Mat::rows(&at, g.cols());
            assert!(kernels::patch_product(dst, acc, rows, image, g, m));
        }
    };
    if grads::collect(w, write) {
        return Ok(None);
    }
    let mut dw = vec![0f32; m * g.k()];
    write(&mut dw, false);
    Ok(Some(cpu(dw, w.shape())?))
}

/// 2-D convolution of `x [N, C, H, W]` with `w [O, C, K, K]` plus `b [O]`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, spec: ConvSpec) -> Result<Tensor> {
    conv2d_with(x, w, b, spec, None)
}

/// `act(conv2d(x, w, b, spec))` as one op where it can be (the same bits, as
/// [`linear_act`]).
pub fn conv2d_act(x: &Tensor, w: &Tensor, b: &Tensor, spec: ConvSpec, act: Act) -> Result<Tensor> {
    conv2d_with(x, w, b, spec, Some(act))
}

fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    spec: ConvSpec,
    act: Option<Act>,
) -> Result<Tensor> {
    if on_fast_path(x) {
        let (act, after) = Fused::split(act, [x, w, b]);
        let y = x.contiguous()?.apply_op3_arc(
            w,
            b,
            Arc::new(Box::new(Conv2dOp {
                spec,
                act,
                unfolded: w.track_op().then(|| Mutex::new(None)),
            })),
        )?;
        then_act(y, after)
    } else {
        let y = x
            .conv2d(w, spec.padding, spec.stride, 1, 1)?
            .broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        then_act(y, act)
    }
}

/// The geometry of the convolution a transposed convolution is the adjoint of: its input
/// is the transposed convolution's output.
fn conv_t_geom(x: &[usize], w: &[usize], spec: ConvSpec) -> Result<ConvGeom> {
    let [n, c, h, wd] = x else {
        bail!("conv_transpose2d input must be [N, C, H, W], got {x:?}")
    };
    let [wc, o, kh, kw] = w else {
        bail!("conv_transpose2d kernel must be [C, O, KH, KW], got {w:?}")
    };
    let s = spec.stride;
    let full = |i: usize, k: usize| {
        ((i.max(1) - 1) * s + k + spec.output_padding).checked_sub(2 * spec.padding)
    };
    let (Some(oh), Some(ow)) = (full(*h, *kh), full(*wd, *kw)) else {
        bail!("conv_transpose2d: padding {spec:?} larger than the output of {x:?}")
    };
    if c != wc || s == 0 || spec.output_padding >= s || *h == 0 || *wd == 0 {
        bail!("conv_transpose2d: input {x:?} does not fit kernel {w:?} with {spec:?}")
    }
    Ok(ConvGeom {
        n: *n,
        c: *o,
        h: oh,
        w: ow,
        kh: *kh,
        kw: *kw,
        stride: s,
        pad: spec.padding,
        oh: *h,
        ow: *wd,
    })
}

struct ConvTranspose2dOp(ConvSpec);

impl ConvTranspose2dOp {
    /// The gradients of a projection (a 1x1 input, [`ConvGeom::projects`]): the
    /// products of the general case on the same operands, without the column matrix.
    fn projection_bwd(
        g: &ConvGeom,
        (x, w, b): (&Tensor, &Tensor, &Tensor),
        (xd, wd, gr): (&[f32], &[f32], &[f32]),
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (cin, kk) = (x.dim(1)?, g.h * g.w);
        let db = wanted(b, || cpu(kernels::channel_sums(gr, g.n, g.c, kk), g.c))?;
        let dx = wanted(x, || {
            let dx = kernels::product(Mat::rows(gr, g.k()), Mat::t(wd, g.k()), g.n, cin, g.k());
            cpu(dx, x.shape())
        })?;
        let dw = wanted_or_collected(w, || {
            let (a, c) = (Mat::t(xd, cin), Mat::rows(gr, g.k()));
            if grads::collect(w, |dst, acc| {
                kernels::matmul(dst, acc, a, c, cin, g.k(), g.n)
            }) {
                Ok(None)
            } else {
                cpu(kernels::product(a, c, cin, g.k(), g.n), w.shape()).map(Some)
            }
        })?;
        Ok((dx, dw, db))
    }
}

impl CustomOp3 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "gan-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let g = conv_t_geom(l1.dims(), l2.dims(), self.0)?;
        let cin = l1.dims()[1];
        let np = g.cols();
        if g.projects() {
            // y [n, o * kk] = x [n, c] W [c, o * kk], W in its stored layout.
            let mut y = kernels::product(Mat::rows(x, cin), Mat::rows(w, g.k()), g.n, g.k(), cin);
            kernels::per_channel_mut(&mut y, g.c, g.h * g.w, |c, v| *v += b[c]);
            return Ok((CpuStorage::F32(y), (g.n, g.c, g.h, g.w).into()));
        }
        // The columns are not needed again (the gradients are computed from the output's),
        // so they are formed tile by tile in registers where that gives the same bits.
        let mut y = match super::direct::conv_adjoint(x, w, &g, cin) {
            Some(y) => y,
            None => {
                let xt = kernels::swap01(x, g.n, cin, g.oh * g.ow, None);
                kernels::col2im_of_product(w, &xt, &g, cin).unwrap_or_else(|| {
                    let cols =
                        kernels::product(Mat::t(w, g.k()), Mat::rows(&xt, np), g.k(), np, cin);
                    kernels::col2im(&cols, &g)
                })
            }
        };
        kernels::per_channel_mut(&mut y, g.c, g.h * g.w, |c, v| *v += b[c]);
        Ok((CpuStorage::F32(y), (g.n, g.c, g.h, g.w).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = conv_t_geom(x.dims(), w.dims(), self.0)?;
        let (cin, np, p) = (x.dim(1)?, g.cols(), g.oh * g.ow);
        with_data(&[x, w, grad], |d| {
            let (xd, wd, gr) = (d[0], d[1], d[2]);
            if g.projects() {
                return Self::projection_bwd(&g, (x, w, b), (xd, wd, gr));
            }
            // The gradients are the forward pass and weight gradient of the convolution
            // this one is the adjoint of, on the output's gradient: from the image in
            // place and blocks of patches where those give the whole patch matrix's bits.
            let gcols = std::cell::OnceCell::new();
            let unfolded = || gcols.get_or_init(|| Unfolded::new(gr, &g, cin));
            let db = wanted(b, || {
                cpu(kernels::channel_sums(gr, g.n, g.c, g.h * g.w), g.c)
            })?;
            let dx = wanted(x, || {
                // `transpose_each` adds +0 where there is no bias; so does a zero bias.
                let direct = || super::direct::conv(gr, &g, wd, &vec![0.0; cin], cin);
                let patches = || kernels::patch_convolve(gr, &g, wd, None, cin);
                let dx = match super::direct::prefers_patches(cin, g.k()) {
                    true => patches().or_else(direct),
                    false => direct().or_else(patches),
                }
                .unwrap_or_else(|| unfolded().convolve(wd, None, cin, &g));
                cpu(dx, x.shape())
            })?;
            let dw = wanted_or_collected(w, || {
                if kernels::depth_block(cin, g.k(), np).is_some() {
                    return patch_weight_grad(w, xd, gr, &g, cin);
                }
                let xt = kernels::swap01(xd, g.n, cin, p, None);
                let (a, c) = (Mat::rows(&xt, np), unfolded().cols(&g).transposed());
                if grads::collect(w, |dst, acc| {
                    kernels::matmul(dst, acc, a, c, cin, g.k(), np)
                }) {
                    Ok(None)
                } else {
                    cpu(kernels::product(a, c, cin, g.k(), np), w.shape()).map(Some)
                }
            })?;
            Ok((dx, dw, db))
        })
    }
}

/// Transposed 2-D convolution of `x [N, C, H, W]` with `w [C, O, K, K]` plus `b [O]`:
/// the output is `(H - 1) * stride - 2 * padding + K + output_padding` high.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, b: &Tensor, spec: ConvSpec) -> Result<Tensor> {
    if on_fast_path(x) {
        x.contiguous()?
            .apply_op3_arc(w, b, Arc::new(Box::new(ConvTranspose2dOp(spec))))
    } else {
        x.conv_transpose2d(w, spec.padding, spec.output_padding, spec.stride, 1)?
            .broadcast_add(&b.reshape((1, (), 1, 1))?)
    }
}

// ---------------------------------------------------------------- batch norm

/// The per-channel batch statistics a training-mode batch norm used.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Mean over the batch (and positions).
    pub mean: Tensor,
    /// Biased variance over the batch (and positions), the one that normalised.
    pub var: Tensor,
    /// Values each channel's statistics came from (for the unbiased running variance).
    pub count: usize,
}

type Moments = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

struct BatchNormOp {
    eps: f64,
    /// A leaky ReLU applied to the normalised output in the same pass (slope 0: ReLU).
    act: Option<f32>,
    moments: Moments,
}

fn ncp(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        bail!("batch norm needs [N, C, ...], got {dims:?}")
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "gan-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let (n, c, p) = ncp(l1.dims())?;
        let (mean, var) = kernels::channel_moments(x, n, c, p);
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma[i] / (var[i] as f64 + self.eps).sqrt() as f32)
            .collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        let y = kernels::channel_affine(x, c, p, &scale, &shift, self.act);
        *self.moments.lock().unwrap() = Some((mean, var));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, p) = ncp(x.dims())?;
        let Some((mean, var)) = self.moments.lock().unwrap().clone() else {
            bail!("batch norm backward before its forward")
        };
        let m = (n * p) as f64;
        // Through the fused activation first: the output is positive exactly where the
        // normalised value was.
        let grad = match self.act {
            None => grad.clone(),
            Some(a) => with_data(&[res, grad], |d| {
                let g = kernels::map2(d[0], d[1], move |y, g| if y > 0.0 { g } else { a * g });
                cpu(g, res.shape())
            })?,
        };
        with_data(&[x, gamma, &grad], |d| {
            let (xd, gm, g) = (d[0], d[1], d[2]);
            // sum(g) and sum(g * (x - mean)) per channel.
            let (sum_g, sum_gx) = kernels::channel_grad_sums(g, xd, &mean, n, c, p);
            let inv: Vec<f64> = var
                .iter()
                .map(|&v| 1.0 / (v as f64 + self.eps).sqrt())
                .collect();
            let dgamma = wanted(gamma, || {
                cpu((0..c).map(|i| (sum_gx[i] * inv[i]) as f32).collect(), c)
            })?;
            let dbeta = wanted(beta, || cpu(sum_g.iter().map(|&v| v as f32).collect(), c))?;
            let dx = wanted(x, || {
                // dx = a g + b x + k per channel, from
                // dx = gamma inv (g - sum_g / m - xhat sum(g xhat) / m).
                let a: Vec<f32> = (0..c).map(|i| (gm[i] as f64 * inv[i]) as f32).collect();
                let b: Vec<f64> = (0..c)
                    .map(|i| -(gm[i] as f64) * inv[i].powi(3) * sum_gx[i] / m)
                    .collect();
                let k: Vec<f32> = (0..c)
                    .map(|i| {
                        (-(gm[i] as f64) * inv[i] * sum_g[i] / m - b[i] * mean[i] as f64) as f32
                    })
                    .collect();
                let b: Vec<f32> = b.into_iter().map(|v| v as f32).collect();
                cpu(
                    kernels::channel_affine2(g, xd, c, p, (&a, &b, &k)),
                    x.shape(),
                )
            })?;
            Ok((dx, dgamma, dbeta))
        })
    }
}

/// Training-mode batch norm of `x [N, C, ...]` with scale `gamma [C]` and shift
/// `beta [C]`: normalised by the batch's own per-channel mean and biased variance,
/// which are returned for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    batch_norm_impl(x, gamma, beta, eps, None)
}

/// [`batch_norm_train`] followed by a leaky ReLU of `slope` (0: ReLU) in the same pass:
/// the pair every DCGAN-style layer ends with, one graph node and one buffer fewer.
pub fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    slope: f64,
) -> Result<(Tensor, BatchStats)> {
    batch_norm_impl(x, gamma, beta, eps, Some(slope))
}

fn batch_norm_impl(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Option<f64>,
) -> Result<(Tensor, BatchStats)> {
    let (n, c, p) = ncp(x.dims())?;
    if on_fast_path(x) {
        let moments: Moments = Arc::default();
        let op = BatchNormOp {
            eps,
            act: act.map(|a| a as f32),
            moments: moments.clone(),
        };
        let y = x
            .contiguous()?
            .apply_op3_arc(gamma, beta, Arc::new(Box::new(op)))?;
        let Some((mean, var)) = moments.lock().unwrap().clone() else {
            bail!("batch norm forward left no statistics")
        };
        let stats = BatchStats {
            mean: cpu(mean, c)?,
            var: cpu(var, c)?,
            count: n * p,
        };
        return Ok((y, stats));
    }
    // [N, C, P] -> [C, N*P] so that each channel's values sit in one row.
    let flat = x.reshape((n, c, p))?.transpose(0, 1)?.reshape((c, n * p))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let y = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape((c, 1))?)?
        .broadcast_add(&beta.reshape((c, 1))?)?
        .reshape((c, n, p))?
        .transpose(0, 1)?
        .reshape(x.shape())?;
    let stats = BatchStats {
        mean: mean.flatten_all()?.detach(),
        var: var.flatten_all()?.detach(),
        count: n * p,
    };
    let y = match act {
        Some(a) => leaky_relu(&y, a)?,
        None => y,
    };
    Ok((y, stats))
}

// ---------------------------------------------------------------- frozen batch norm

/// `act(x * scale[c] + shift[c])` with constant coefficients: batch norm in evaluation
/// mode whose weights need no gradient.
struct ChannelAffineOp {
    scale: Vec<f32>,
    shift: Vec<f32>,
    act: Option<f32>,
}

impl CustomOp1 for ChannelAffineOp {
    fn name(&self) -> &'static str {
        "gan-channel-affine"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, p) = ncp(l.dims())?;
        let y = kernels::channel_affine(data(s, l)?, c, p, &self.scale, &self.shift, self.act);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, p) = ncp(x.dims())?;
        let a = self.act.unwrap_or(1.0);
        with_data(&[res, grad], |d| {
            // d/du act(u) read off the output (positive exactly where u was), times scale.
            let mut dx = d[1].to_vec();
            kernels::per_channel_mut(&mut dx, c, p, |ci, g| *g *= self.scale[ci]);
            for (g, &y) in dx.iter_mut().zip(d[0]) {
                if y <= 0.0 {
                    *g *= a;
                }
            }
            cpu(dx, x.shape()).map(Some)
        })
    }
}

/// Evaluation-mode batch norm with constant statistics, scale and shift, followed by a
/// leaky ReLU of `slope` (`None`: none), in one pass: `act(x * scale[c] + shift[c])`
/// for `x [N, C, ...]`. Gradients reach `x` only.
pub fn channel_affine(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    slope: Option<f64>,
) -> Result<Tensor> {
    let (_, c, _) = ncp(x.dims())?;
    if on_fast_path(x) {
        let op = ChannelAffineOp {
            scale: scale.to_vec1()?,
            shift: shift.to_vec1()?,
            act: slope.map(|a| a as f32),
        };
        return x.contiguous()?.apply_op1_arc(Arc::new(Box::new(op)));
    }
    let mut shape = vec![1; x.rank()];
    shape[1] = c;
    let y = x
        .broadcast_mul(&scale.reshape(shape.as_slice())?)?
        .broadcast_add(&shift.reshape(shape.as_slice())?)?;
    match slope {
        Some(a) => leaky_relu(&y, a),
        None => Ok(y),
    }
}

// ---------------------------------------------------------------- leaky ReLU

struct LeakyReluOp(f32);

impl CustomOp1 for LeakyReluOp {
    fn name(&self) -> &'static str {
        "gan-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = kernels::map(data(s, l)?, leaky(self.0));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        with_data(&[x, grad], |d| {
            cpu(leaky_back(d[0], d[1], self.0), x.shape()).map(Some)
        })
    }
}

/// The leaky ReLU of slope `a`.
fn leaky(a: f32) -> impl Fn(f32) -> f32 + Sync + Send + Copy {
    move |v| if v > 0.0 { v } else { a * v }
}

/// An activation that a linear or convolution layer can apply in its own op
/// ([`linear_act`], [`conv2d_act`]): one tensor, and one gradient for the backward pass
/// to add up, fewer than the layer and the activation as two ops; the same bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// [`leaky_relu`] of this slope (0: ReLU). Only a slope of 0 or more fuses: the op's
    /// gradient reads the slope off its output's sign, which a negative slope would flip.
    Leaky(f64),
    /// [`swish`], `x sigmoid(x)`.
    Swish,
}

/// The activation a layer's op applies to its own output, with what its backward pass
/// needs.
enum Fused {
    None,
    Leaky(f32),
    /// The output before the activation and its sigmoids, kept for the backward pass
    /// when the op's output takes a gradient (`None`: it does not).
    Swish(Option<Mutex<Option<SwishKept>>>),
}

/// What a fused swish keeps for its backward pass: its input and their sigmoids.
type SwishKept = (Vec<f32>, Vec<f32>);

impl Fused {
    /// What an op on `inputs` applies of `act`, and what is left to apply after it.
    fn split<const N: usize>(act: Option<Act>, inputs: [&Tensor; N]) -> (Self, Option<Act>) {
        match act {
            None => (Fused::None, None),
            Some(Act::Leaky(a)) if a >= 0.0 => (Fused::Leaky(a as f32), None),
            Some(Act::Leaky(a)) => (Fused::None, Some(Act::Leaky(a))),
            Some(Act::Swish) => {
                let tracked = inputs.iter().any(|t| t.track_op());
                (Fused::Swish(tracked.then(|| Mutex::new(None))), None)
            }
        }
    }

    /// Applies the activation to the op's output `y` in place.
    fn activate(&self, y: &mut Vec<f32>) {
        match self {
            Fused::None => {}
            Fused::Leaky(a) => kernels::map_in_place(y, leaky(*a)),
            Fused::Swish(None) => *y = swish_of(y),
            Fused::Swish(Some(keep)) => {
                let (out, sig) = swish_and_sigmoids(y);
                *keep.lock().unwrap() = Some((std::mem::replace(y, out), sig));
            }
        }
    }

    /// The gradient of the op's output before its activation from `g`, the gradient of
    /// its output `out` (a leaky ReLU's output is positive exactly where its input was).
    /// A swish's kept values stay until the graph is dropped: the output alone cannot
    /// give them back, and a graph may be backpropagated more than once.
    fn through<'a>(&self, out: &[f32], g: &'a [f32]) -> Result<Cow<'a, [f32]>> {
        Ok(match self {
            Fused::None => Cow::Borrowed(g),
            Fused::Leaky(a) => Cow::Owned(leaky_back(out, g, *a)),
            Fused::Swish(keep) => {
                let kept = keep.as_ref().map(|k| k.lock().unwrap());
                let Some(Some((x, sig))) = kept.as_deref() else {
                    bail!("swish: a backward pass without its forward pass's values")
                };
                Cow::Owned(swish_back(x, g, sig))
            }
        })
    }
}

/// `y`, then `act` if one is given, as its own op.
fn then_act(y: Tensor, act: Option<Act>) -> Result<Tensor> {
    match act {
        Some(Act::Leaky(a)) => leaky_relu(&y, a),
        Some(Act::Swish) => swish(&y),
        None => Ok(y),
    }
}

/// The leaky ReLU's backward pass: `g` where `sign` (its input, or its output when the
/// slope is >= 0) is positive, `a g` elsewhere.
fn leaky_back(sign: &[f32], g: &[f32], a: f32) -> Vec<f32> {
    kernels::map2(sign, g, move |s, g| if s > 0.0 { g } else { a * g })
}

/// `max(x, 0) + slope * min(x, 0)`; slope 0 is ReLU. The gradient at 0 is `slope`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if on_fast_path(x) {
        x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(LeakyReluOp(slope as f32))))
    } else {
        // relu(x) (1 - slope) + slope x: two cheap ops instead of candle-nn's masks.
        (x.relu()? * (1.0 - slope))? + (x * slope)?
    }
}

/// ReLU through the same fused kernel as [`leaky_relu`].
pub fn relu(x: &Tensor) -> Result<Tensor> {
    leaky_relu(x, 0.0)
}

// ---------------------------------------------------------------- tanh

/// `tanh` as a rational function of `x` on `[-7.9, 7.9]` (saturated beyond: `tanh(7.9)`
/// rounds to 1 in `f32`), plain arithmetic that vectorises, where libm's `tanhf` is a
/// call per element: 17% of an MLP generator's time at batch 64. Eigen's coefficients
/// (`ptanh_float`), within a few units in the last place of the exact value.
#[inline(always)]
fn tanh_rational(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_7e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = A[6];
    let p = p * x2 + A[5];
    let p = p * x2 + A[4];
    let p = p * x2 + A[3];
    let p = p * x2 + A[2];
    let p = p * x2 + A[1];
    let p = (p * x2 + A[0]) * x;
    let q = B[3];
    let q = q * x2 + B[2];
    let q = q * x2 + B[1];
    let q = q * x2 + B[0];
    p / q
}

/// `tanh` with its gradient over the threads: `exact`, libm's `tanhf` bits as candle
/// computes them (vectorised where the platform's `tanhf` is known: see
/// [`super::tanhf`]), so that training keeps candle's bits; otherwise the vectorising
/// rational approximation.
struct TanhOp {
    exact: bool,
}

impl CustomOp1 for TanhOp {
    fn name(&self) -> &'static str {
        "gan-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l)?;
        let y = match self.exact {
            true => kernels::map_tanh(x),
            false => kernels::map(x, tanh_rational),
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // candle's own gradient is `0 - g (y^2 - 1)`: the same number, up to the sign of
        // a zero, which candle's adding of the result into its zeros settles the same way.
        with_data(&[res, grad], |d| {
            let dx = kernels::map2(d[0], d[1], |y, g| g * (1.0 - y * y));
            cpu(dx, res.shape()).map(Some)
        })
    }
}

/// `tanh(x)` by a vectorising rational approximation on the CPU (a few units in the last
/// place from candle's `tanh`, which calls libm per element), candle's elsewhere.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    tanh_op(x, false)
}

/// `tanh(x)` with candle's values and gradients bit for bit, but over the threads on the
/// CPU (candle's element-wise ops run on the calling thread alone here: see
/// [`crate::fast::alloc::one_thread_pool`]).
pub fn tanh_exact(x: &Tensor) -> Result<Tensor> {
    tanh_op(x, true)
}

fn tanh_op(x: &Tensor, exact: bool) -> Result<Tensor> {
    if on_fast_path(x) {
        x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(TanhOp { exact })))
    } else {
        x.tanh()
    }
}

// ---------------------------------------------------------------- max pooling

struct MaxPoolOp(usize);

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "gan-max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let k = self.0;
        let y = kernels::max_pool(data(s, l)?, n * c, h, w, k);
        Ok((CpuStorage::F32(y), Shape::from((n, c, h / k, w / k))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let grad = grad.contiguous()?;
        with_data(&[x, res, &grad], |d| {
            let dx = kernels::max_pool_grad(d[0], d[1], d[2], (n * c, h, w), self.0);
            cpu(dx, x.shape()).map(Some)
        })
    }
}

/// Max pooling of `x [N, C, H, W]` over `k x k` windows with stride `k`, as candle's
/// `max_pool2d(k)`, with the gradient of the maximum: each window's gradient goes to its
/// (first) largest element, as in PyTorch. Candle 0.11's own backward multiplies it by
/// (number of maxima) / k^2, a quarter of the true gradient for 2x2 windows; its forward
/// is the same as this one's, and both of its passes run on one thread. Other devices
/// than the CPU get candle's own, its backward included.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if k == 0 {
        bail!("max_pool2d needs a window of at least 1, got 0")
    }
    let (_, _, h, w) = x.dims4()?;
    if h < k || w < k {
        bail!("max_pool2d: a {h}x{w} input is smaller than its {k}x{k} window")
    }
    if on_fast_path(x) {
        x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(MaxPoolOp(k))))
    } else {
        x.max_pool2d(k)
    }
}

// ---------------------------------------------------------------- swish

/// Swish, keeping the forward pass's sigmoids for the backward pass when the input
/// takes a gradient: `expf` was 14% of an energy model's training step (its Langevin
/// searches run swish forward and backward 60 times a step), half of it recomputing them.
struct SwishOp {
    sigmoids: Option<Mutex<Option<Vec<f32>>>>,
}

fn sigmoid(v: f32) -> f32 {
    sigmoid_from((-v).exp())
}

/// The sigmoid of `v` from `e = exp(-v)`.
fn sigmoid_from(e: f32) -> f32 {
    1.0 / (1.0 + e)
}

impl CustomOp1 for SwishOp {
    fn name(&self) -> &'static str {
        "gan-swish"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l)?;
        let y = match &self.sigmoids {
            Some(keep) => {
                let (y, sig) = swish_and_sigmoids(x);
                *keep.lock().unwrap() = Some(sig);
                y
            }
            None => swish_of(x),
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let kept = self
            .sigmoids
            .as_ref()
            .and_then(|k| k.lock().unwrap().take());
        with_data(&[x, grad], |d| {
            let dx = match kept {
                Some(sig) => swish_back(d[0], d[1], &sig),
                None => kernels::map2(d[0], d[1], |x, g| {
                    let s = sigmoid(x);
                    g * s * (1.0 + x * (1.0 - s))
                }),
            };
            cpu(dx, x.shape()).map(Some)
        })
    }
}

/// `x sigmoid(x)` and the sigmoids, kept for a backward pass.
fn swish_and_sigmoids(x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let sig = kernels::map_exp(x, |v| -v, |_, e| sigmoid_from(e));
    (kernels::map2(x, &sig, |v, s| v * s), sig)
}

/// `x sigmoid(x)` in one pass (the same bits as [`swish_and_sigmoids`]).
fn swish_of(x: &[f32]) -> Vec<f32> {
    kernels::map_exp(x, |v| -v, |v, e| v * sigmoid_from(e))
}

/// Swish's backward pass: the gradient of `x` from the output's `g` and `x`'s sigmoids.
fn swish_back(x: &[f32], g: &[f32], sig: &[f32]) -> Vec<f32> {
    kernels::map3(x, g, sig, |x, g, s| g * s * (1.0 + x * (1.0 - s)))
}

/// Swish, `x sigmoid(x)` (candle's `silu`), in one pass each way: candle's backward of
/// `silu` builds five ops and as many temporaries, which the Langevin searches of
/// energy models run thousands of times a step.
pub fn swish(x: &Tensor) -> Result<Tensor> {
    if on_fast_path(x) {
        let sigmoids = x.track_op().then(|| Mutex::new(None));
        x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(SwishOp { sigmoids })))
    } else {
        x.silu()
    }
}

// ---------------------------------------------------------------- softplus

/// Softplus as [`crate::loss::softplus`] computes it, `max(x, 0) + ln(1 + exp(-|x|))`, in
/// one pass each way instead of candle's seven ops and their temporaries (two hidden
/// layers of Triple-GAN's generator), keeping `exp(-|x|)` for the backward pass when
/// the input takes a gradient.
struct SoftplusOp {
    tails: Option<Mutex<Option<Vec<f32>>>>,
    /// The vectorising approximation ([`softplus_fast`]): inference sections only.
    fast: bool,
}

/// `exp(-a)` for `a >= 0` in plain arithmetic that vectorises (Cephes' `expf`: `a` split
/// as `n ln 2 - r`, `ln 2` in two parts so that `r` keeps its bits, `exp(r)` by its Taylor
/// polynomial on `|r| <= ln 2 / 2`, `2^-n` built in the exponent bits). Below `2^-126`
/// it stays at `exp(-87)`.
#[inline(always)]
fn exp_neg(a: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let a = a.min(87.0);
    let n = (a * std::f32::consts::LOG2_E + 0.5) as i32;
    let nf = n as f32;
    let r = nf * LN2_HI - a + nf * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = (p * r + 1.0) * r + 1.0;
    p * f32::from_bits(((127 - n) as u32) << 23)
}

/// Softplus in plain arithmetic that vectorises, within a few units in the last place of
/// [`crate::loss::softplus`] (libm's `expf` and `logf`, a call per element: most of
/// Triple-GAN's generation time after its products): `ln(1 + t)` for `t = exp(-|x|)` as
/// `2 atanh(s)`, `s = t / (2 + t) <= 1/3`, by its series to `s^13`.
#[inline(always)]
fn softplus_fast(x: f32) -> f32 {
    let t = exp_neg(x.abs());
    let s = t / (2.0 + t);
    let s2 = s * s;
    let p = 1.0 / 13.0;
    let p = p * s2 + 1.0 / 11.0;
    let p = p * s2 + 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let p = p * s2 + 1.0;
    let y = x.max(0.0) + 2.0 * s * p;
    // A NaN stays one, as candle's gives (a select, which still vectorises).
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// softplus(v) from its tail `e = exp(-|v|)`, as candle's ops round it.
fn softplus_from(v: f32, e: f32) -> f32 {
    v.max(0.0) + (e + 1.0).ln()
}

/// The gradient of softplus at `x` for an upstream gradient `g` (`e = exp(-|x|)`),
/// rounded as candle's backward pass through the seven ops rounds it, step by step
/// (each `0.0 +` is its accumulation into a fresh gradient, which turns -0 into 0).
fn softplus_grad(x: f32, g: f32, e: f32) -> f32 {
    let d_log = 0.0 + (0.0 + g) / (e + 1.0);
    let d_exp = 0.0 + d_log; // the affine `e * 1 + 1`: `d * 1 + 0`
    let d_neg = 0.0 + d_exp * e;
    let d_abs = 0.0 - d_neg;
    let from_abs = d_abs * if x >= 0.0 { 1.0 } else { -1.0 };
    let from_relu = (0.0 + g) * if x >= 0.0 { 1.0 } else { 0.0 };
    (0.0 + from_relu) + from_abs
}

impl CustomOp1 for SoftplusOp {
    fn name(&self) -> &'static str {
        "gan-softplus"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l)?;
        if self.fast {
            return Ok((
                CpuStorage::F32(kernels::map(x, softplus_fast)),
                l.shape().clone(),
            ));
        }
        let y = match &self.tails {
            Some(keep) => {
                let tails = kernels::map_exp(x, |v| -v.abs(), |_, e| e);
                let y = kernels::map2(x, &tails, softplus_from);
                *keep.lock().unwrap() = Some(tails);
                y
            }
            None => kernels::map_exp(x, |v| -v.abs(), softplus_from),
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let kept = self.tails.as_ref().and_then(|k| k.lock().unwrap().take());
        with_data(&[x, grad], |d| {
            let dx = match kept {
                Some(tails) => kernels::map3(d[0], d[1], &tails, softplus_grad),
                None => kernels::map2(d[0], d[1], |x, g| softplus_grad(x, g, (-x.abs()).exp())),
            };
            cpu(dx, x.shape()).map(Some)
        })
    }
}

/// Softplus, the same bits as [`crate::loss::softplus`] forward and backward where the
/// input feeds nothing else (a gradient reaching the input from elsewhere as well would
/// be summed in another order); in an inference section ([`crate::fast::layers::inference`])
/// with no gradient to take, the vectorising approximation, as `tanh` is there. Other
/// devices than the CPU get candle's ops.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    if on_fast_path(x) {
        let tracked = x.track_op();
        let fast = !tracked && crate::fast::layers::in_inference();
        let tails = tracked.then(|| Mutex::new(None));
        x.contiguous()?
            .apply_op1_arc(Arc::new(Box::new(SoftplusOp { tails, fast })))
    } else {
        crate::loss::softplus(x)
    }
}
