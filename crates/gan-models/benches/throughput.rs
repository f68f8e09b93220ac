//! Training and generation throughput of each model at its default settings.
//!
//! `cargo xtask bench` runs this (and the PyTorch twin in `bench/` with `--vs-pytorch`);
//! directly: `cargo bench -p gan-models --bench throughput -- --model infogan --json`.
//!
//! Training: images per second over `--steps` engine steps (one D step and one G step
//! each, the engine's `train_step`) after `--warmup` untimed ones, on random images in
//! [-1, 1]: the cost of a step does not depend on what the pixels show. Generation:
//! images per second of G in evaluation mode at the same batch size.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use gan_core::fast::layers::{frozen, inference};
use gan_core::prior::rng;
use gan_core::{Batch, Model, Step, TrainConfig, Trainer};
use gan_models::registry::kinds;

#[global_allocator]
static ALLOC: gan_core::fast::alloc::Allocator = gan_core::fast::alloc::Allocator;

struct Args {
    models: Vec<String>,
    batch: usize,
    warmup: usize,
    steps: usize,
    json: bool,
    device: String,
    /// Overrides of the models' default configs, as a JSON object.
    config: serde_json::Value,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        models: kinds().iter().map(|s| s.to_string()).collect(),
        batch: 64,
        warmup: 5,
        steps: 30,
        json: false,
        device: "cpu".into(),
        config: serde_json::json!({}),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => {
                let m = value()?;
                args.models = if m == "all" {
                    kinds().iter().map(|s| s.to_string()).collect()
                } else if kinds().contains(&m.as_str()) {
                    vec![m]
                } else {
                    bail!("unknown model {m:?}: one of {} or all", kinds().join(", "))
                };
            }
            "--batch" => args.batch = value()?.parse().context("--batch")?,
            "--warmup" => args.warmup = value()?.parse().context("--warmup")?,
            "--steps" => args.steps = value()?.parse().context("--steps")?,
            "--device" => args.device = value()?,
            "--json" => args.json = true,
            "--config" => args.config = serde_json::from_str(&value()?).context("--config")?,
            // The models, one a line, for `cargo xtask bench` to run one at a time.
            "--list" => {
                println!("{}", kinds().join("\n"));
                std::process::exit(0)
            }
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

/// The model at its registry defaults, with `overrides` on top.
fn model(kind: &str, overrides: &serde_json::Value, device: &Device) -> Result<Box<dyn Model>> {
    let entry = gan_models::find(kind)?;
    let mut config = (entry.default_config)();
    if let (Some(c), Some(o)) = (config.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    (entry.build)(&config, device, 0)
}

struct Figures {
    best_ms: f64,
    train_img_per_s: f64,
    train_ms_per_step: f64,
    gen_img_per_s: f64,
    /// Operations of the matrix products of one training step, and of one generated batch.
    train_gflop_per_step: f64,
    gen_gflop_per_batch: f64,
}

fn measure(kind: &str, args: &Args, device: &Device) -> Result<Figures> {
    let model = model(kind, &args.config, device)?;
    let dir = tempfile::tempdir()?;
    let cfg = TrainConfig {
        batch_size: args.batch,
        checkpoint_every: 0,
        progress: false,
        // The running average gan-cli keeps by default (the GAN's and DCGAN's G).
        ema: gan_models::find(kind)?.ema,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model.as_ref(), cfg, dir.path())?;
    // Each stream at its own batch size where it declares one (Triple-GAN's), else
    // --batch; in its own channels (colour domains). Images per step are the first
    // stream's, the one that makes the epoch.
    let streams = model.streams();
    let sizes: Vec<usize> = streams
        .iter()
        .map(|s| s.batch_size.unwrap_or(args.batch))
        .collect();
    let b = sizes.first().copied().unwrap_or(args.batch);
    let n = 16 * sizes.iter().copied().max().unwrap_or(b);
    let images = Tensor::rand(-1f32, 1f32, (n, 1, 28, 28), device)?;
    let labels = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, device)?;
    let coloured = images.repeat((1, 3, 1, 1))?;
    // One batch of every stream the model reads, all from the same random images.
    let batch = |i: usize| -> Result<BTreeMap<String, Batch>> {
        streams
            .iter()
            .zip(&sizes)
            .map(|(s, &bs)| {
                let start = (i * bs) % (n - bs + 1);
                let x = match s.source.channels() {
                    3 => &coloured,
                    _ => &images,
                };
                let one = Batch {
                    images: x.narrow(0, start, bs)?,
                    labels: Some(labels.narrow(0, start, bs)?),
                };
                Ok((s.name.to_string(), one))
            })
            .collect()
    };
    for i in 0..args.warmup {
        trainer.train_step(&batch(i)?)?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(args.steps);
    let flops = gan_core::fast::product_flops();
    for i in 0..args.steps {
        let b = batch(i)?;
        let t = Instant::now();
        trainer.train_step(&b)?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let train_gflop_per_step =
        (gan_core::fast::product_flops() - flops) as f64 / 1e9 / args.steps as f64;
    // The median step: robust to another process taking a core for a moment.
    times.sort_by(f64::total_cmp);
    let train = times[times.len() / 2] * args.steps as f64;
    let best_ms = times[0] * 1e3;
    if std::env::var("BREAKDOWN").is_ok() {
        breakdown(model.as_ref(), &batch(0)?, args.steps)?;
    }
    let mut r = rng(0, gan_core::prior::RngStream::Scratch);
    let Some(g) = model.generator() else {
        return Ok(Figures {
            best_ms,
            train_img_per_s: (args.steps * b) as f64 / train,
            train_ms_per_step: 1e3 * train / args.steps as f64,
            gen_img_per_s: f64::NAN,
            train_gflop_per_step,
            gen_gflop_per_batch: f64::NAN,
        });
    };
    for _ in 0..2 {
        frozen(|| g.generate(b, None, &mut r))?.to_dtype(DType::F32)?;
    }
    // `GEN_REPS=N`: exactly that many generation batches (for a profiler); else at least
    // max(steps, 10) and at least one second's worth (bench.py's rule): a few dozen
    // milliseconds of generation measured mostly the VM's noise.
    let exact: Option<usize> = std::env::var("GEN_REPS").ok().and_then(|v| v.parse().ok());
    let (t, flops) = (Instant::now(), gan_core::fast::product_flops());
    // As `gan-cli eval` calls it: one inference section for all the batches (no graph,
    // batch norm fused, weights prepared once), its preparation inside the timing.
    let reps = gan_core::fast::on_worker(|| {
        inference(|| -> Result<usize> {
            let mut reps = 0;
            while match exact {
                Some(n) => reps < n,
                None => reps < args.steps.max(10) || t.elapsed().as_secs_f64() < 1.0,
            } {
                let x = g.generate(b, None, &mut r)?;
                x.sum_all()?.to_scalar::<f32>()?;
                reps += 1;
            }
            Ok(reps)
        })
    })?;
    let gen = t.elapsed().as_secs_f64();
    Ok(Figures {
        best_ms,
        train_img_per_s: (args.steps * b) as f64 / train,
        train_ms_per_step: 1e3 * train / args.steps as f64,
        gen_img_per_s: (reps * b) as f64 / gen,
        train_gflop_per_step,
        gen_gflop_per_batch: (gan_core::fast::product_flops() - flops) as f64 / 1e9 / reps as f64,
    })
}

/// Where a step's time goes: forward, backward and optimizer of each phase.
fn breakdown(model: &dyn Model, batches: &BTreeMap<String, Batch>, steps: usize) -> Result<()> {
    let mut opts: Vec<(&str, gan_core::Adam)> = model
        .networks()
        .into_iter()
        .map(|(n, v)| Ok((n, gan_core::Adam::new(v, Default::default())?)))
        .collect::<Result<_>>()?;
    let mut r = rng(0, gan_core::prior::RngStream::Sample);
    let phases = model.phases();
    let mut t = vec![[0f64; 3]; phases.len()];
    for _ in 0..steps {
        let mut step = Step::new(batches, &mut r);
        for (i, phase) in phases.iter().enumerate() {
            let c = Instant::now();
            let out = model.run_phase(phase.name, &mut step)?;
            t[i][0] += c.elapsed().as_secs_f64();
            let c = Instant::now();
            let grads = out.loss.backward()?;
            t[i][1] += c.elapsed().as_secs_f64();
            let c = Instant::now();
            for (n, o) in opts.iter_mut() {
                if phase.networks.contains(n) {
                    o.step(&grads)?;
                }
            }
            drop(grads);
            t[i][2] += c.elapsed().as_secs_f64();
        }
    }
    let ms = |x: f64| 1e3 * x / steps as f64;
    let parts: Vec<String> = phases
        .iter()
        .zip(&t)
        .map(|(p, t)| {
            format!(
                "{} fwd {:.1} bwd {:.1} adam {:.1}",
                p.name,
                ms(t[0]),
                ms(t[1]),
                ms(t[2])
            )
        })
        .collect();
    eprintln!("breakdown ms/step: {}", parts.join(" | "));
    Ok(())
}

fn main() -> Result<()> {
    gan_core::fast::alloc::keep_freed_memory();
    gan_core::fast::alloc::one_thread_pool();
    let args = parse()?;
    let device = gan_core::device::parse_device(&args.device)?;
    let threads = candle_core::utils::get_num_threads();
    let peak = match args.device.as_str() {
        "cpu" => fma_peak(threads),
        _ => None,
    };
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
                    "train_gflop_per_step": f.train_gflop_per_step,
                    "gen_gflop_per_batch": f.gen_gflop_per_batch,
                    "peak_gflops": peak,
                })
            );
        } else {
            println!(
                "{kind:>8}  batch {:>3}  train {:>8.1} img/s (median {:>6.1} ms/step, best {:>6.1})  generate {:>9.1} img/s  [{} threads, {}]",
                args.batch, f.train_img_per_s, f.train_ms_per_step, f.best_ms, f.gen_img_per_s, threads, args.device
            );
            let rate = |gflop: f64, ms: f64| gflop / ms * 1e3;
            println!(
                "          products: {:.3} GFLOP a step ({:.1} GFLOP/s), {:.4} GFLOP a generated batch ({:.1} GFLOP/s); FMA peak {}",
                f.train_gflop_per_step,
                rate(f.train_gflop_per_step, f.train_ms_per_step),
                f.gen_gflop_per_batch,
                f.gen_gflop_per_batch * f.gen_img_per_s / args.batch as f64,
                peak.map_or("not measured".into(), |p| format!("{p:.1} GFLOP/s on {threads} threads")),
            );
        }
    }
    Ok(())
}

/// The machine's rate of single-precision fused multiply-adds with `threads` threads at
/// once, GFLOP/s (two per lane per FMA): independent FMAs on registers only, the widest
/// vectors the CPU has (AVX-512, else AVX2), the best of three runs (about 20 ms each on
/// Zen 3).
/// Measured, not read from a data sheet: a VM's two vCPUs may be two cores (Zen 3: 98
/// GFLOP/s on one thread, 190 on two) or two threads of one core's FMA units; either
/// way it is the ceiling for every model and for PyTorch alike.
fn fma_peak(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let wide = is_x86_feature_detected!("avx512f");
        let narrow = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if !(wide || narrow) {
            return None;
        }
        let iters = 20_000_000usize;
        let best = (0..3)
            .map(|_| {
                let barrier = std::sync::Barrier::new(threads);
                let t = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            barrier.wait();
                            // SAFETY: the feature checks above.
                            std::hint::black_box(unsafe {
                                if wide {
                                    fma_loop_avx512(iters / 2)
                                } else {
                                    fma_loop_avx2(iters / 2)
                                }
                            });
                        });
                    }
                });
                let lanes = if wide { 16.0 } else { 8.0 };
                threads as f64 * (iters / 2) as f64 * 12.0 * lanes * 2.0
                    / t.elapsed().as_secs_f64()
                    / 1e9
            })
            .fold(0.0, f64::max);
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(1.0); 12];
    let (b, c) = (
        _mm512_set1_ps(std::hint::black_box(0.999_999)),
        _mm512_set1_ps(std::hint::black_box(1e-6)),
    );
    for _ in 0..std::hint::black_box(n) {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let (b, c) = (
        _mm256_set1_ps(std::hint::black_box(0.999_999)),
        _mm256_set1_ps(std::hint::black_box(1e-6)),
    );
    for _ in 0..std::hint::black_box(n) {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    // Every chain enters the result: with only the last one stored, the compiler dropped
    // the other eleven and the loop ran one latency-bound chain, which counted as twelve
    // read about 1.5x the real peak (150 GFLOP/s a thread on a 3 GHz Zen 3).
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}
