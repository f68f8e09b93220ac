//! gan-cli end to end on a tiny MNIST-format folder the test writes: train, resume,
//! sample, and the errors a user meets.

use std::path::Path;
use std::process::Command;

mod common;
use common::{cli, fails, ok, ok_stdout, small_args, tiny_mnist};

#[test]
fn train_resume_sample_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    let small = [
        "--z-dim",
        "8",
        "--hidden",
        "32,64",
        "--batch-size",
        "16",
        "--quiet",
        "--no-verify",
    ];

    let mut args = vec!["cgan", "--data-dir", data, "--epochs", "1", "--out", run_s];
    args.extend(small);
    ok(&args);
    for f in [
        "config.json",
        "metrics.jsonl",
        "samples/samples.png",
        "checkpoints/latest.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );

    // Resume for one more epoch: 4 more steps in the same log.
    ok(&[
        "cgan",
        "--data-dir",
        data,
        "--resume",
        run_s,
        "--epochs",
        "2",
        "--quiet",
        "--no-verify",
    ]);
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        8
    );
    fails(
        &[
            "gan",
            "--data-dir",
            data,
            "--resume",
            run_s,
            "--quiet",
            "--no-verify",
        ],
        "is a cgan run",
    );

    // Samples: a grid, and a tensor for other tools.
    let png = tmp.path().join("sevens.png");
    ok(&[
        "sample",
        "--checkpoint",
        run_s,
        "--n",
        "12",
        "--label",
        "7",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let st = tmp.path().join("x.safetensors");
    ok(&[
        "sample",
        "--checkpoint",
        run_s,
        "--n",
        "5",
        "--out",
        st.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let images = tensors.tensor("images").unwrap();
    assert_eq!(images.shape(), &[5, 1, 28, 28]);
    let vals: Vec<f32> = images
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(vals.iter().all(|v| (0.0..=1.0).contains(v)));

    // What a user gets wrong.
    fails(&["sample", "--checkpoint", run_s, "--out", "x.jpg"], ".png");
    fails(
        &[
            "sample",
            "--checkpoint",
            run_s,
            "--label",
            "12",
            "--out",
            png.to_str().unwrap(),
        ],
        "0-9",
    );
    fails(
        &[
            "sample",
            "--checkpoint",
            data,
            "--out",
            png.to_str().unwrap(),
        ],
        "not a run folder",
    );
    let mut again = vec!["cgan", "--data-dir", data, "--epochs", "1", "--out", run_s];
    again.extend(small);
    fails(&again, "already holds a run");
    fails(
        &[
            "gan",
            "--data-dir",
            data,
            "--batch-size",
            "0",
            "--no-verify",
        ],
        "batch size",
    );
    fails(
        &["gan", "--data-dir", data, "--k", "0", "--no-verify"],
        "k (discriminator steps",
    );
    fails(
        &["gan", "--data-dir", data, "--device", "tpu", "--no-verify"],
        "unknown device",
    );
    fails(
        &["gan", "--data-dir", data, "--g-loss", "wasserstein"],
        "saturating",
    );
    // Canonical checksums are checked unless told otherwise.
    fails(
        &[
            "gan",
            "--data-dir",
            data,
            "--epochs",
            "1",
            "--out",
            tmp.path().join("r2").to_str().unwrap(),
        ],
        "SHA-256",
    );
}

#[test]
fn unconditional_model_refuses_a_label() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let run = tmp.path().join("run");
    ok(&[
        "gan",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--z-dim",
        "8",
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--quiet",
        "--no-verify",
    ]);
    let out = tmp.path().join("s.png");
    fails(
        &[
            "sample",
            "--checkpoint",
            run.to_str().unwrap(),
            "--label",
            "3",
            "--out",
            out.to_str().unwrap(),
        ],
        "unconditional",
    );
}

#[test]
fn infogan_eval_mapping_and_digit_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap();
    let run = tmp.path().join("info");
    let run_s = run.to_str().unwrap();
    ok(&[
        "infogan",
        "--data-dir",
        data,
        "--max-steps",
        "2",
        "--batch-size",
        "16",
        "--out",
        run_s,
        "--quiet",
        "--no-verify",
    ]);
    for f in [
        "c1_categories.png",
        "c2_continuous.png",
        "c3_continuous.png",
    ] {
        assert!(run.join("samples").join(f).exists(), "{f}");
    }
    let png = tmp.path().join("d.png");
    fails(
        &[
            "sample",
            "--checkpoint",
            run_s,
            "--digit",
            "3",
            "--out",
            png.to_str().unwrap(),
        ],
        "gan-cli eval",
    );

    let judge = tmp.path().join("judge.safetensors");
    ok(&[
        "train-judge",
        "--data-dir",
        data,
        "--no-verify",
        "--epochs",
        "1",
        "--out",
        judge.to_str().unwrap(),
    ]);
    let out = cli(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data-dir",
        data,
        "--no-verify",
        "--judge",
        judge.to_str().unwrap(),
        "--n",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("accuracy") && stdout.contains("confusion"),
        "{stdout}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval_infogan.json")).unwrap())
            .unwrap();
    let acc = saved["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(saved["n"].as_u64(), Some(64));
    assert!(run.join("samples/c1_categories_by_digit.png").exists());

    ok(&[
        "sample",
        "--checkpoint",
        run_s,
        "--digit",
        "3",
        "--n",
        "4",
        "--out",
        png.to_str().unwrap(),
    ]);
    fails(
        &[
            "sample",
            "--checkpoint",
            run_s,
            "--digit",
            "11",
            "--out",
            png.to_str().unwrap(),
        ],
        "0-9",
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let info = &report["categorical_code"];
    assert_eq!(info["c1_accuracy"].as_f64(), Some(acc));
    assert_eq!(info["generated_by_category"]["n"].as_u64(), Some(20));
    // Q's label-free measures on the test images, each in its range.
    let free = &info["label_free"];
    let confidence = free["confidence"].as_f64().unwrap();
    assert!((0.1..=1.0).contains(&confidence), "{free}");
    let mi = free["mutual_information"].as_f64().unwrap();
    assert!((0.0..=10f64.ln() + 1e-9).contains(&mi), "{free}");
    let kept = free["shift_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&kept), "{free}");
    assert!(stdout.contains("without labels"), "{stdout}");
    // Trained without --epochs: the run planned the model's own default.
    let config = read_json(&run.join("config.json"));
    let planned = gan_models::registry::find("infogan").unwrap().epochs;
    assert_eq!(
        config["train"]["epochs"].as_u64(),
        Some(planned as u64),
        "{config}"
    );
    assert!(report["conditional_accuracy"].is_null());

    // --digit is InfoGAN's: another model's run is refused with a reason.
    let tiny_gan = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = small_args("gan", data, out.to_str().unwrap(), &["--max-steps", "1"]);
        args.extend_from_slice(extra);
        ok(&args);
        out
    };
    let gan = tiny_gan("gan", &[]);
    // The GAN's defaults: G at 5x D's learning rate, and G's running average, which the
    // checkpoint carries.
    let config = read_json(&gan.join("config.json"));
    assert_eq!(config["train"]["ema"].as_f64(), Some(0.999), "{config}");
    assert_eq!(
        config["train"]["network_lr"]["g"].as_f64(),
        Some(1e-3),
        "{config}"
    );
    let latest = read_json(&gan.join("checkpoints/latest.json"));
    let ckpt = gan
        .join("checkpoints")
        .join(latest["dir"].as_str().unwrap());
    assert!(ckpt.join("g.ema.safetensors").exists());
    // --ema-decay 0: no average.
    let plain = tiny_gan("gan-plain", &["--ema-decay", "0"]);
    assert!(read_json(&plain.join("config.json"))["train"]
        .get("ema")
        .is_none());
    fails(
        &[
            "sample",
            "--checkpoint",
            gan.to_str().unwrap(),
            "--digit",
            "3",
            "--out",
            png.to_str().unwrap(),
        ],
        "InfoGAN",
    );

    // Agreement of categorical codes: a run with itself agrees on every image; a model
    // without such a code, or too many images, is refused with a reason.
    let gan_s = gan.to_str().unwrap();
    let head = ["agreement", "--data-dir", data, "--no-verify", "--n"];
    let stdout = ok_stdout(&[&head[..], &["40", run_s, run_s]].concat());
    assert!(
        stdout.contains("mean 100.00%") && stdout.contains("agrees most"),
        "{stdout}"
    );
    fails(
        &[&head[..], &["40", run_s, gan_s]].concat(),
        "no categorical code",
    );
    fails(&[&head[..], &["65", run_s, run_s]].concat(), "--n");
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The evaluation suite end to end on tiny data: a judge, eval of an unconditional and a
/// conditional run, the report of both, and the errors a user meets.
#[test]
fn eval_suite_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap();
    let judge = tmp.path().join("j/judge.safetensors");
    let judge_s = judge.to_str().unwrap();
    let stdout = String::from_utf8_lossy(
        &cli(&[
            "train-judge",
            "--data-dir",
            data,
            "--no-verify",
            "--epochs",
            "1",
            "--out",
            judge_s,
        ])
        .stdout,
    )
    .to_string();
    assert!(stdout.contains("judge test accuracy"), "{stdout}");
    let card = read_json(&judge.with_extension("json"));
    let sha = card["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    let mut runs = vec![];
    for kind in ["gan", "cgan"] {
        let run = tmp.path().join(kind);
        ok(&small_args(
            kind,
            data,
            run.to_str().unwrap(),
            &["--epochs", "1"],
        ));
        // The engine drew the curves at the end of the epoch.
        assert!(run.join("curves/losses.png").exists());
        assert!(run.join("curves/accuracy.png").exists());
        let args = [
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--data-dir",
            data,
            "--no-verify",
            "--judge",
            judge_s,
            "--n",
            "30",
            "--seed",
            "3",
        ];
        let out = cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("MNIST-FID") && stdout.contains(&sha),
            "{stdout}"
        );
        let r = read_json(&run.join("eval.json"));
        assert_eq!(r["model"], kind);
        assert_eq!(r["step"].as_u64(), Some(4));
        assert_eq!(r["judge_sha256"].as_str(), Some(sha.as_str()));
        for metric in [
            "fid",
            "fid_floor_train_vs_test",
            "inception_score",
            "coverage",
        ] {
            let m = &r[metric];
            assert_eq!(m["n"].as_u64(), Some(30), "{metric}");
            assert_eq!(m["seed"].as_u64(), Some(3), "{metric}");
            assert_eq!(m["judge_sha256"].as_str(), Some(sha.as_str()), "{metric}");
        }
        let fid = r["fid"]["value"].as_f64().unwrap();
        assert!(fid.is_finite() && fid >= 0.0);
        let is = r["inception_score"]["value"].as_f64().unwrap();
        assert!((1.0..=10.0 + 1e-9).contains(&is), "{is}");
        let hist: u64 = r["coverage"]["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(hist, 30);
        // The training images are the test images here: the floor is (about) zero.
        assert!(r["fid_floor_train_vs_test"]["value"].as_f64().unwrap() < 1e-6);
        if kind == "cgan" {
            let c = &r["conditional_accuracy"];
            assert_eq!(c["n"].as_u64(), Some(30));
            assert_eq!(c["per_class"].as_array().unwrap().len(), 10);
        } else {
            assert!(r["conditional_accuracy"].is_null());
        }
        // Same seed, same judge: the same numbers.
        ok(&args);
        let again = read_json(&run.join("eval.json"));
        assert_eq!(again["fid"], r["fid"]);
        assert_eq!(
            std::fs::read_to_string(run.join("eval.jsonl"))
                .unwrap()
                .lines()
                .count(),
            2
        );
        assert!(run.join("curves/eval.png").exists());
        runs.push(run);
    }

    // Bad input.
    let gan = runs[0].to_str().unwrap();
    let base = [
        "eval",
        "--checkpoint",
        gan,
        "--data-dir",
        data,
        "--no-verify",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let j = |extra: Vec<String>| {
        let mut v = extra;
        v.extend(["--judge".to_string(), judge_s.to_string()]);
        v
    };
    let run_fails = |args: Vec<String>, needle: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&refs, needle);
    };
    run_fails(
        j(with(&["--n", "100"])),
        "more than the 64 MNIST test images",
    );
    run_fails(j(with(&["--n", "1"])), "at least 2");
    run_fails(
        with(&["--n", "10", "--judge", "/nonexistent/judge.safetensors"]),
        "no judge at /nonexistent/judge.safetensors",
    );
    run_fails(with(&["--n", "10", "--judge", data]), "no judge at");
    let not_judge = tmp.path().join("gan/checkpoints/latest.json");
    run_fails(
        with(&["--n", "10", "--judge", not_judge.to_str().unwrap()]),
        "not a safetensors file",
    );
    fails(
        &[
            "eval",
            "--checkpoint",
            data,
            "--judge",
            judge_s,
            "--no-verify",
        ],
        "not a run folder",
    );

    // The report compares both runs in one self-contained page and a Markdown table.
    let html = tmp.path().join("out/report.html");
    ok(&[
        "report",
        runs[0].to_str().unwrap(),
        runs[1].to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("MNIST-FID") && page.contains("conditional accuracy"));
    assert!(page.matches("src=\"data:image/png;base64,").count() >= 6);
    assert!(!page.contains("src=\"/") && !page.contains("src=\"runs"));
    let md = std::fs::read_to_string(html.with_extension("md")).unwrap();
    assert!(md.contains("| **MNIST-FID (lower is better)** |"), "{md}");
    assert!(md.contains("](../gan/curves/losses.png)"), "{md}");
    fails(
        &["report", runs[0].to_str().unwrap(), "--out", "x.pdf"],
        ".html",
    );
    fails(
        &["report", data, "--out", html.to_str().unwrap()],
        "not a run folder",
    );
}

/// A first run with no data: gan-cli downloads real MNIST (served from `../shared` by a
/// local mirror the test starts, first mirror dead), verifies it and trains.
#[test]
fn first_run_fetches_mnist_from_a_mirror() {
    let Some(shared) = gan_data::mnist::shared_mnist_dir() else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return;
    };
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let root = shared.to_path_buf();
    let serving = std::thread::spawn(move || {
        // Four files: train and test images and labels.
        for _ in 0..4 {
            let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_secs(60)) else {
                return;
            };
            let name = req.url().trim_start_matches('/').to_string();
            match std::fs::read(root.join(&name)) {
                Ok(bytes) => req.respond(tiny_http::Response::from_data(bytes)).unwrap(),
                Err(_) => req.respond(tiny_http::Response::empty(404)).unwrap(),
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mnist");
    let run = tmp.path().join("run");
    // Port 9 (discard) on loopback refuses: the first mirror fails, the second serves.
    let out = Command::new(env!("CARGO_BIN_EXE_gan-cli"))
        .env("GAN_RS_MNIST_MIRRORS", format!("http://127.0.0.1:9/,{url}"))
        .args([
            "gan",
            "--data-dir",
            data.to_str().unwrap(),
            "--max-steps",
            "2",
            "--quiet",
        ])
        .args([
            "--z-dim",
            "8",
            "--hidden",
            "32",
            "--out",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("downloading") && err.contains("downloaded from"),
        "{err}"
    );
    for f in gan_data::MNIST_FILES
        .iter()
        .map(|f| format!("{}.gz", f.name))
    {
        assert!(data.join(&f).exists(), "{f} not stored");
    }
    assert!(run.join("checkpoints/latest.json").exists());
    serving.join().unwrap();
}

#[test]
fn every_model_of_the_registry_is_a_subcommand() {
    let out = cli(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    for e in gan_models::MODELS {
        assert!(
            help.contains(e.kind) && help.contains(e.about),
            "{} missing from:\n{help}",
            e.kind
        );
        let out = cli(&[e.kind, "--help"]);
        let sub = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{} --help failed", e.kind);
        // The shared training settings and the model's own config, with their defaults.
        assert!(
            sub.contains("--epochs") && sub.contains("--resume"),
            "{sub}"
        );
        // --epochs says the model's own default.
        let epochs = format!("training images [default: {}]", e.epochs);
        assert!(sub.contains(&epochs), "{}: {epochs} missing", e.kind);
        let config = (e.default_config)();
        for key in config.as_object().unwrap().keys() {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(
                sub.contains(&flag),
                "{}: {flag} missing from:\n{sub}",
                e.kind
            );
        }
    }
    fails(&["nope"], "unrecognized subcommand");
}

#[test]
fn encoder_models_are_scored_on_their_reconstructions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap();
    let judge = tmp.path().join("judge.safetensors");
    let judge_s = judge.to_str().unwrap();
    ok(&[
        "train-judge",
        "--data-dir",
        data,
        "--no-verify",
        "--epochs",
        "1",
        "--out",
        judge_s,
    ]);
    for kind in ["ae", "vae"] {
        let run = tmp.path().join(kind);
        let r = run.to_str().unwrap();
        ok(&[
            kind,
            "--data-dir",
            data,
            "--no-verify",
            "--quiet",
            "--z-dim",
            "4",
            "--width",
            "4",
            "--batch-size",
            "16",
            "--max-steps",
            "4",
            "--out",
            r,
        ]);
        // The reconstruction grid is drawn every epoch, from the first real images.
        assert!(run.join("samples/reconstructions.png").exists(), "{kind}");
        let out = cli(&[
            "eval",
            "--checkpoint",
            r,
            "--data-dir",
            data,
            "--no-verify",
            "--judge",
            judge_s,
            "--n",
            "30",
            "--probe-features",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let e = read_json(&run.join("eval.json"));
        let rec = &e["reconstruction"];
        assert_eq!(rec["n"].as_u64(), Some(30), "{kind}: {e}");
        let mse = rec["mse_per_pixel"].as_f64().unwrap();
        assert!(mse.is_finite() && mse > 0.0 && mse <= 4.0, "{mse}");
        assert!((0.0..=1.0).contains(&rec["label_kept"].as_f64().unwrap()));
        assert!(rec["fid"].as_f64().unwrap().is_finite(), "{kind}: {rec}");
        // The feature probes, the 64 training images as the reference.
        let f = &e["representation"];
        assert_eq!(
            (f["n"].as_u64(), f["reference"].as_u64()),
            (Some(30), Some(64)),
            "{e}"
        );
        for k in ["nn_code", "nn_features", "probe_code", "probe_features"] {
            assert!((0.0..=1.0).contains(&f[k].as_f64().unwrap()), "{k}: {f}");
        }
        // The test images are the training images here: 1-NN finds each one itself.
        assert_eq!(f["nn_features"].as_f64(), Some(1.0), "{f}");
        // Only the VAE has a prior to sample from.
        assert_eq!(e["fid"].is_null(), kind == "ae", "{kind}: {e}");
        let png = tmp.path().join(format!("{kind}.png"));
        let err = ok(&[
            "sample",
            "--checkpoint",
            r,
            "--reconstruct",
            "--n",
            "8",
            "--data-dir",
            data,
            "--no-verify",
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(err.contains("reconstructions") && png.exists(), "{err}");
        // Three rows of interpolations, 8 decoded codes each; their PNG is 10 images wide.
        let st = tmp.path().join(format!("{kind}-path.safetensors"));
        let args = |out: &Path| {
            [
                "sample",
                "--checkpoint",
                r,
                "--interpolate",
                "--n",
                "3",
                "--data-dir",
                data,
                "--no-verify",
                "--out",
            ]
            .map(String::from)
            .into_iter()
            .chain([out.display().to_string()])
            .collect::<Vec<_>>()
        };
        let err = ok(&args(&st).iter().map(|a| a.as_str()).collect::<Vec<_>>());
        assert!(err.contains("interpolations"), "{err}");
        let bytes = std::fs::read(&st).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(tensors.tensor("images").unwrap().shape(), &[24, 1, 28, 28]);
        let grid = tmp.path().join(format!("{kind}-path.png"));
        ok(&args(&grid).iter().map(|a| a.as_str()).collect::<Vec<_>>());
        let png = std::fs::read(&grid).unwrap();
        // The IHDR width: 10 images of 28 pixels with their padding, wider than 8.
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!((280..28 * 12).contains(&width), "{width}");
    }
    // Both runs' reconstructions of the same four test images under them: three rows.
    let (ae, vae) = (tmp.path().join("ae"), tmp.path().join("vae"));
    let grid = tmp.path().join("both.png");
    let compare = |out: &Path| {
        cli(&[
            "sample",
            "--checkpoint",
            ae.to_str().unwrap(),
            "--reconstruct",
            "--compare",
            vae.to_str().unwrap(),
            "--n",
            "4",
            "--data-dir",
            data,
            "--no-verify",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    assert!(compare(&grid).status.success());
    let png = std::fs::read(&grid).unwrap();
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert!(w > h && (3 * 28..4 * 28).contains(&h), "{w}x{h}");
    let out = compare(&tmp.path().join("both.safetensors"));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".png"));
    // A model without an encoder says so.
    let gan = tmp.path().join("gan");
    ok(&small_args(
        "gan",
        data,
        gan.to_str().unwrap(),
        &["--max-steps", "1"],
    ));
    let png = tmp.path().join("g.png");
    fails(
        &[
            "sample",
            "--checkpoint",
            gan.to_str().unwrap(),
            "--reconstruct",
            "--data-dir",
            data,
            "--no-verify",
            "--out",
            png.to_str().unwrap(),
        ],
        "no encoder",
    );
}

#[test]
fn triplegan_records_its_labelled_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap();
    let train = |seed: &str, labels: &str, out: &str| {
        let run = tmp.path().join(out);
        let args = [
            "triplegan",
            "--data-dir",
            data,
            "--no-verify",
            "--quiet",
            "--labels",
            labels,
            "--batch-u",
            "8",
            "--batch-g",
            "20",
            "--batch-pseudo",
            "8",
            "--pretrain-steps",
            "1",
            "--max-steps",
            "2",
            "--seed",
            seed,
            "--out",
            run.to_str().unwrap(),
        ];
        (args.map(|a| a.to_string()), run)
    };
    let picked = |run: &std::path::Path| -> Vec<usize> {
        let text = std::fs::read_to_string(run.join("labelled.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(v["labelled"].clone()).unwrap()
    };
    let mut lists = Vec::new();
    for (seed, out) in [("1", "a"), ("1", "b"), ("2", "c")] {
        let (args, run) = train(seed, "20", out);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        lists.push(picked(&run));
    }
    // Two of each digit (the tiny set's label is its index mod 10), in class order.
    let l = &lists[0];
    assert_eq!(l.len(), 20);
    for (k, pair) in l.chunks(2).enumerate() {
        assert!(pair.iter().all(|&i| i % 10 == k), "{l:?}");
    }
    assert_eq!(lists[0], lists[1], "the seed decides");
    assert_ne!(lists[0], lists[2], "another seed, other digits");
    // The tiny set has 6 or 7 of each digit: 8 each cannot be had.
    let (args, run) = train("1", "80", "d");
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "has only",
    );
    assert!(!run.exists(), "a refused run leaves no folder");
}
