//! Training and generation throughput of each model at its default settings.
//!
//! `cargo xtask bench` runs this (and the PyTorch twin in `bench/` with `--vs-pytorch`);
//! directly: `cargo bench -p gan-models --bench throughput -- --model infogan --json`.
//!
//! Training: images per second over `--steps` engine steps (one D step and one G step
//! each, the engine's `train_step`) after `--warmup` untimed ones, on random images in
//! [-1, 1]: the cost of a step does not depend on what the pixels show. Generation:
//! images per second of G in evaluation mode at the same batch size.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use gan_core::prior::rng;
use gan_core::{Batch, GanModel, TrainConfig, Trainer};
use gan_models::{Cgan, Dcgan, Gan, Infogan, KINDS};

#[global_allocator]
static ALLOC: gan_core::alloc::Allocator = gan_core::alloc::Allocator;

struct Args {
    models: Vec<String>,
    batch: usize,
    warmup: usize,
    steps: usize,
    json: bool,
    device: String,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        models: KINDS.iter().map(|s| s.to_string()).collect(),
        batch: 64,
        warmup: 5,
        steps: 30,
        json: false,
        device: "cpu".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => {
                let m = value()?;
                args.models = if m == "all" {
                    KINDS.iter().map(|s| s.to_string()).collect()
                } else if KINDS.contains(&m.as_str()) {
                    vec![m]
                } else {
                    bail!("unknown model {m:?}: one of {} or all", KINDS.join(", "))
                };
            }
            "--batch" => args.batch = value()?.parse().context("--batch")?,
            "--warmup" => args.warmup = value()?.parse().context("--warmup")?,
            "--steps" => args.steps = value()?.parse().context("--steps")?,
            "--device" => args.device = value()?,
            "--json" => args.json = true,
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be positive")
    }
    Ok(args)
}

fn model(kind: &str, device: &Device) -> Result<Box<dyn GanModel>> {
    Ok(match kind {
        "gan" => Box::new(Gan::new(Default::default(), device, 0)?),
        "dcgan" => Box::new(Dcgan::new(Default::default(), device, 0)?),
        "cgan" => Box::new(Cgan::new(Default::default(), device, 0)?),
        "infogan" => Box::new(Infogan::new(Default::default(), device, 0)?),
        other => bail!("unknown model {other}"),
    })
}

struct Figures {
    best_ms: f64,
    train_img_per_s: f64,
    train_ms_per_step: f64,
    gen_img_per_s: f64,
}

fn measure(kind: &str, args: &Args, device: &Device) -> Result<Figures> {
    let model = model(kind, device)?;
    let dir = tempfile::tempdir()?;
    let cfg = TrainConfig {
        batch_size: args.batch,
        checkpoint_every: 0,
        progress: false,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model.as_ref(), cfg, dir.path())?;
    let b = args.batch;
    let n = 16 * b;
    let images = Tensor::rand(-1f32, 1f32, (n, 1, 28, 28), device)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, device)?;
    let batch = |i: usize| -> Result<Batch> {
        let start = (i * b) % n;
        Ok(Batch {
            images: images.narrow(0, start, b)?,
            labels: labels.narrow(0, start, b)?,
        })
    };
    for i in 0..args.warmup {
        trainer.train_step(&batch(i)?)?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..args.steps {
        let b = batch(i)?;
        let t = Instant::now();
        trainer.train_step(&b)?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    // The median step: robust to another process taking a core for a moment.
    times.sort_by(f64::total_cmp);
    let train = times[times.len() / 2] * args.steps as f64;
    let best_ms = times[0] * 1e3;
    if std::env::var("BREAKDOWN").is_ok() {
        breakdown(model.as_ref(), &batch(0)?, args.steps)?;
    }
    let mut r = rng(0, 9);
    for _ in 0..2 {
        model.generate(b, None, &mut r)?.to_dtype(DType::F32)?;
    }
    let t = Instant::now();
    let reps = args.steps.max(10);
    for _ in 0..reps {
        let x = model.generate(b, None, &mut r)?;
        x.sum_all()?.to_scalar::<f32>()?;
    }
    let gen = t.elapsed().as_secs_f64();
    Ok(Figures {
        best_ms,
        train_img_per_s: (args.steps * b) as f64 / train,
        train_ms_per_step: 1e3 * train / args.steps as f64,
        gen_img_per_s: (reps * b) as f64 / gen,
    })
}

/// Where a step's time goes: forward, backward and optimizer of each half.
fn breakdown(model: &dyn GanModel, batch: &Batch, steps: usize) -> Result<()> {
    let mut opts: Vec<(&str, gan_core::Adam)> = model
        .networks()
        .into_iter()
        .map(|(n, v)| Ok((n, gan_core::Adam::new(v, Default::default())?)))
        .collect::<Result<_>>()?;
    let mut r = rng(0, 3);
    let mut t = [0f64; 6];
    for _ in 0..steps {
        let c = Instant::now();
        let d = model.d_step(batch, &mut r)?;
        t[0] += c.elapsed().as_secs_f64();
        let c = Instant::now();
        let grads = d.loss.backward()?;
        t[1] += c.elapsed().as_secs_f64();
        let c = Instant::now();
        for (n, o) in opts.iter_mut() {
            if model.d_networks().contains(n) {
                o.step(&grads)?;
            }
        }
        drop(grads);
        t[2] += c.elapsed().as_secs_f64();
        let c = Instant::now();
        let g = model.g_step(batch, &mut r)?;
        t[3] += c.elapsed().as_secs_f64();
        let c = Instant::now();
        let grads = g.loss.backward()?;
        t[4] += c.elapsed().as_secs_f64();
        let c = Instant::now();
        for (n, o) in opts.iter_mut() {
            if model.g_networks().contains(n) {
                o.step(&grads)?;
            }
        }
        drop(grads);
        t[5] += c.elapsed().as_secs_f64();
    }
    let ms = |i: usize| 1e3 * t[i] / steps as f64;
    eprintln!(
        "breakdown ms/step: D fwd {:.1} bwd {:.1} adam {:.1} | G fwd {:.1} bwd {:.1} adam {:.1}",
        ms(0),
        ms(1),
        ms(2),
        ms(3),
        ms(4),
        ms(5)
    );
    Ok(())
}

fn main() -> Result<()> {
    gan_core::alloc::keep_freed_memory();
    gan_core::alloc::one_thread_pool();
    let args = parse()?;
    let device = gan_core::device::parse_device(&args.device)?;
    let threads = candle_core::utils::get_num_threads();
    for kind in &args.models {
        let f = measure(kind, &args, &device)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "model": kind,
                    "batch": args.batch,
                    "threads": threads,
                    "device": args.device,
                    "steps": args.steps,
                    "train_img_per_s": f.train_img_per_s,
                    "train_ms_per_step": f.train_ms_per_step,
                    "train_best_ms_per_step": f.best_ms,
                    "gen_img_per_s": f.gen_img_per_s,
                })
            );
        } else {
            println!(
                "{kind:>8}  batch {:>3}  train {:>8.1} img/s (median {:>6.1} ms/step, best {:>6.1})  generate {:>9.1} img/s  [{} threads, {}]",
                args.batch, f.train_img_per_s, f.train_ms_per_step, f.best_ms, f.gen_img_per_s, threads, args.device
            );
        }
    }
    Ok(())
}
