//! Per-layer cost, forward plus backward, of the InfoGAN network's layers at batch 64:
//! gan-core's ops against candle's stock ops on the same inputs.
//!
//! `cargo bench -p gan-core --bench ops` (add `-- --reps N`).

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use gan_core::fast::ops::{self, ConvSpec};

#[global_allocator]
static ALLOC: gan_core::fast::alloc::Allocator = gan_core::fast::alloc::Allocator;

type Layer = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

fn time(inputs: &[Tensor], f: &Layer, reps: usize) -> Result<(f64, f64)> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (mut fwd, mut all) = (0.0, 0.0);
    for rep in 0..reps + 1 {
        let t = Instant::now();
        let y = f(&ts)?;
        let tf = t.elapsed().as_secs_f64();
        let loss = y.sum_all()?;
        let _grads = loss.backward()?;
        let ta = t.elapsed().as_secs_f64();
        if rep > 0 {
            fwd += tf;
            all += ta;
        }
    }
    Ok((1e3 * fwd / reps as f64, 1e3 * all / reps as f64))
}

fn main() -> Result<()> {
    gan_core::fast::alloc::keep_freed_memory();
    let mut reps = 10;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps);
        }
    }
    let dev = Device::Cpu;
    let r = |s: &[usize]| Tensor::rand(-1f32, 1f32, s, &dev);
    // `OPS_BATCH=N`: the batch-64 layers at another batch size.
    let b = std::env::var("OPS_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let s2 = ConvSpec {
        stride: 2,
        padding: 1,
        output_padding: 0,
    };
    let s1 = ConvSpec {
        stride: 1,
        padding: 0,
        output_padding: 0,
    };
    let same = ConvSpec {
        stride: 1,
        padding: 1,
        output_padding: 0,
    };
    let bn_ref = |x: &Tensor, g: &Tensor, be: &Tensor| -> Result<Tensor> {
        // The statistics as candle-nn computes them in training mode.
        let c = x.dim(1)?;
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let mut mean = x.clone();
        for &d in dims.iter().rev() {
            mean = mean.mean_keepdim(d)?;
        }
        let xc = x.broadcast_sub(&mean)?;
        let mut var = xc.sqr()?;
        for &d in dims.iter().rev() {
            var = var.mean_keepdim(d)?;
        }
        xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&g.reshape(shape.as_slice())?)?
            .broadcast_add(&be.reshape(shape.as_slice())?)
    };
    #[allow(clippy::type_complexity)]
    // A convolution `c -> o` with a `k x k` kernel on `h x h` images, ours and candle's.
    let conv = |name, (c, o, h, k): (usize, usize, usize, usize), (stride, padding)| {
        let spec = ConvSpec {
            stride,
            padding,
            output_padding: 0,
        };
        let ours: Layer = Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], spec));
        let theirs: Layer = Box::new(move |t| {
            t[0].conv2d(&t[1], padding, stride, 1, 1)?
                .broadcast_add(&t[2].reshape((1, o, 1, 1))?)
        });
        Ok::<_, candle_core::Error>((
            name,
            vec![r(&[b, c, h, h])?, r(&[o, c, k, k])?, r(&[o])?],
            ours,
            theirs,
        ))
    };
    let mut cases: Vec<(&str, Vec<Tensor>, Layer, Layer)> = vec![
        (
            "G fc 1024->6272",
            vec![r(&[b, 1024])?, r(&[6272, 1024])?, r(&[6272])?],
            Box::new(|t| ops::linear(&t[0], &t[1], &t[2])),
            Box::new(|t| t[0].matmul(&t[1].t()?)?.broadcast_add(&t[2])),
        ),
        (
            "D fc 6272->1024",
            vec![r(&[b, 6272])?, r(&[1024, 6272])?, r(&[1024])?],
            Box::new(|t| ops::linear(&t[0], &t[1], &t[2])),
            Box::new(|t| t[0].matmul(&t[1].t()?)?.broadcast_add(&t[2])),
        ),
        (
            "G convT 128->64, 7->14",
            vec![r(&[b, 128, 7, 7])?, r(&[128, 64, 4, 4])?, r(&[64])?],
            Box::new(move |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv_transpose2d(&t[1], 1, 0, 2, 1)?
                    .broadcast_add(&t[2].reshape((1, 64, 1, 1))?)
            }),
        ),
        (
            "G convT 64->1, 14->28",
            vec![r(&[b, 64, 14, 14])?, r(&[64, 1, 4, 4])?, r(&[1])?],
            Box::new(move |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv_transpose2d(&t[1], 1, 0, 2, 1)?
                    .broadcast_add(&t[2].reshape((1, 1, 1, 1))?)
            }),
        ),
        (
            "D conv 1->64, 28->14",
            vec![r(&[b, 1, 28, 28])?, r(&[64, 1, 4, 4])?, r(&[64])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 1, 2, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 64, 1, 1))?)
            }),
        ),
        (
            "D conv 64->128, 14->7",
            vec![r(&[b, 64, 14, 14])?, r(&[128, 64, 4, 4])?, r(&[128])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 1, 2, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 128, 1, 1))?)
            }),
        ),
        (
            "DCGAN G convT 100->64, 1->7",
            vec![r(&[b, 100, 1, 1])?, r(&[100, 64, 7, 7])?, r(&[64])?],
            Box::new(move |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], s1)),
            Box::new(|t| {
                t[0].conv_transpose2d(&t[1], 0, 0, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 64, 1, 1))?)
            }),
        ),
        (
            "DCGAN conv 3x3 64->64, 7",
            vec![r(&[b, 64, 7, 7])?, r(&[64, 64, 3, 3])?, r(&[64])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], same)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 1, 1, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 64, 1, 1))?)
            }),
        ),
        (
            "DCGAN G convT 64->32, 7->14",
            vec![r(&[b, 64, 7, 7])?, r(&[64, 32, 4, 4])?, r(&[32])?],
            Box::new(move |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv_transpose2d(&t[1], 1, 0, 2, 1)?
                    .broadcast_add(&t[2].reshape((1, 32, 1, 1))?)
            }),
        ),
        (
            "DCGAN G convT 32->1, 14->28",
            vec![r(&[b, 32, 14, 14])?, r(&[32, 1, 4, 4])?, r(&[1])?],
            Box::new(move |t| ops::conv_transpose2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv_transpose2d(&t[1], 1, 0, 2, 1)?
                    .broadcast_add(&t[2].reshape((1, 1, 1, 1))?)
            }),
        ),
        (
            "DCGAN D conv 1->32, 28->14",
            vec![r(&[b, 1, 28, 28])?, r(&[32, 1, 4, 4])?, r(&[32])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 1, 2, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 32, 1, 1))?)
            }),
        ),
        (
            "DCGAN D conv 32->64, 14->7",
            vec![r(&[b, 32, 14, 14])?, r(&[64, 32, 4, 4])?, r(&[64])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s2)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 1, 2, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 64, 1, 1))?)
            }),
        ),
        (
            "DCGAN D conv 64->1, 7->1",
            vec![r(&[b, 64, 7, 7])?, r(&[1, 64, 7, 7])?, r(&[1])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s1)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 0, 1, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 1, 1, 1))?)
            }),
        ),
        (
            "DANN conv 3->32 5x5, 28 b128",
            vec![r(&[128, 3, 28, 28])?, r(&[32, 3, 5, 5])?, r(&[32])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s1)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 0, 1, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 32, 1, 1))?)
            }),
        ),
        (
            "DANN conv 32->48 5x5, 12 b128",
            vec![r(&[128, 32, 12, 12])?, r(&[48, 32, 5, 5])?, r(&[48])?],
            Box::new(move |t| ops::conv2d(&t[0], &t[1], &t[2], s1)),
            Box::new(|t| {
                t[0].conv2d(&t[1], 0, 1, 1, 1)?
                    .broadcast_add(&t[2].reshape((1, 48, 1, 1))?)
            }),
        ),
        (
            "batch norm [64,64,7,7]",
            vec![r(&[b, 64, 7, 7])?, r(&[64])?, r(&[64])?],
            Box::new(|t| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0)),
            Box::new(move |t| bn_ref(&t[0], &t[1], &t[2])),
        ),
        (
            "batch norm [64,32,14,14]",
            vec![r(&[b, 32, 14, 14])?, r(&[32])?, r(&[32])?],
            Box::new(|t| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0)),
            Box::new(move |t| bn_ref(&t[0], &t[1], &t[2])),
        ),
        (
            "batch norm [64,128,7,7]",
            vec![r(&[b, 128, 7, 7])?, r(&[128])?, r(&[128])?],
            Box::new(|t| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0)),
            Box::new(move |t| bn_ref(&t[0], &t[1], &t[2])),
        ),
        (
            "batch norm [64,6272]",
            vec![r(&[b, 6272])?, r(&[6272])?, r(&[6272])?],
            Box::new(|t| Ok(ops::batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0)),
            Box::new(move |t| bn_ref(&t[0], &t[1], &t[2])),
        ),
        (
            "leaky relu [64,64,14,14]",
            vec![r(&[b, 64, 14, 14])?],
            Box::new(|t| ops::leaky_relu(&t[0], 0.1)),
            Box::new(|t| candle_nn::ops::leaky_relu(&t[0], 0.1)),
        ),
        (
            "softplus [64,500]",
            vec![r(&[b, 500])?],
            Box::new(|t| ops::softplus(&t[0])),
            Box::new(|t| gan_core::loss::softplus(&t[0])),
        ),
    ];
    // The energy model's critic (`dpredict`, strided, width 16).
    for (name, shape, spec) in [
        ("energy conv 1->16 5x5, 28->16", (1, 16, 28, 5), (2, 4)),
        ("energy conv 16->32, 16->8", (16, 32, 16, 3), (2, 1)),
        ("energy conv 32->64, 8->4", (32, 64, 8, 3), (2, 1)),
        ("energy conv 64->64, 4->2", (64, 64, 4, 3), (2, 1)),
    ] {
        cases.push(conv(name, shape, spec)?);
    }
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12}",
        "layer (batch 64)", "ours fwd ms", "ours f+b ms", "candle fwd", "candle f+b"
    );
    // `OPS_ONLY=text`: only the layers whose name contains it (for a profiler).
    let only = std::env::var("OPS_ONLY").unwrap_or_default();
    for (name, inputs, ours, theirs) in cases.iter().filter(|c| c.0.contains(&only)) {
        let (of, oa) = time(inputs, ours, reps)?;
        let (tf, ta) = time(inputs, theirs, reps.min(5))?;
        println!("{name:<26} {of:>12.2} {oa:>12.2} {tf:>12.2} {ta:>12.2}");
    }
    Ok(())
}
