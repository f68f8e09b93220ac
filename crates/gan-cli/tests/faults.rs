//! Runs that cannot be lost, from the command line: every fault a user met (issue
//! "Runs that cannot be lost") has its test here, and a training process killed with
//! SIGKILL at random moments always resumes bit for bit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{cli, fails, ok, small_args, tiny_mnist};

fn resume_args<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "gan",
        "--data-dir",
        data,
        "--no-verify",
        "--quiet",
        "--resume",
        run,
    ];
    a.extend_from_slice(extra);
    a
}

fn setup() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    tiny_mnist(&data);
    let data = data.to_str().unwrap().to_string();
    (tmp, data)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The SHA-256 of every file of the newest checkpoint, as its state records them.
fn final_files(run: &Path) -> serde_json::Value {
    let ptr: serde_json::Value =
        serde_json::from_str(&read(&run.join("checkpoints/latest.json"))).unwrap();
    let dir = run.join("checkpoints").join(ptr["dir"].as_str().unwrap());
    let state: serde_json::Value = serde_json::from_str(&read(&dir.join("state.json"))).unwrap();
    state["files"].clone()
}

#[test]
fn divergence_is_an_error_naming_the_step() {
    let (tmp, data) = setup();
    let run = tmp.path().join("nan");
    let out = cli(&small_args(
        "gan",
        &data,
        run.to_str().unwrap(),
        &["--lr", "1e30", "--epochs", "3"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a diverged run must not exit 0:\n{err}"
    );
    assert!(
        err.contains("training diverged") && err.contains("step "),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn resume_refuses_changed_settings_and_says_what_may_change() {
    let (tmp, data) = setup();
    let run = tmp.path().join("r");
    let r = run.to_str().unwrap();
    ok(&small_args("gan", &data, r, &["--epochs", "1"]));
    for (flag, value) in [
        ("--lr", "0.5"),
        ("--batch-size", "8"),
        ("--seed", "9"),
        ("--k", "3"),
        ("--out", "elsewhere"),
        ("--hidden", "64"),
        ("--g-loss", "saturating"),
    ] {
        fails(&resume_args(&data, r, &[flag, value]), flag);
    }
    // A run at its end: more epochs are needed, and said so.
    fails(&resume_args(&data, r, &[]), "pass a larger --epochs");
    // --max-steps at or below where the run is: nothing to do, said so.
    fails(
        &resume_args(&data, r, &["--epochs", "3", "--max-steps", "2"]),
        "at or past --max-steps 2",
    );
    // What may change is reported.
    let err = ok(&resume_args(&data, r, &["--epochs", "2"]));
    assert!(err.contains("--epochs: 1 -> 2"), "{err}");
}

#[test]
fn an_edited_config_does_not_resume_from_a_foreign_data_position() {
    let (tmp, data) = setup();
    let run = tmp.path().join("e");
    let r = run.to_str().unwrap();
    ok(&small_args(
        "gan",
        &data,
        r,
        &["--epochs", "2", "--max-steps", "6"],
    ));
    let cfg = read(&run.join("config.json")).replace("\"batch_size\": 16", "\"batch_size\": 8");
    std::fs::write(run.join("config.json"), cfg).unwrap();
    fails(&resume_args(&data, r, &[]), "was it edited?");
}

#[test]
fn bad_settings_leave_no_stub_folder() {
    let (tmp, data) = setup();
    let run = tmp.path().join("big");
    let mut big = small_args("gan", &data, run.to_str().unwrap(), &[]);
    let at = big.iter().position(|a| *a == "16").unwrap();
    big[at] = "1000";
    fails(&big, "batches of 1000");
    assert!(!run.exists(), "a refused run must not leave a folder");
    fails(
        &small_args("gan", &data, run.to_str().unwrap(), &["--hidden", "0"]),
        "every width > 0",
    );
    assert!(!run.exists());
    // And a fine run can use the name afterwards.
    ok(&small_args(
        "gan",
        &data,
        run.to_str().unwrap(),
        &["--max-steps", "2"],
    ));
}

#[test]
fn sample_never_writes_into_a_checkpoint() {
    let (tmp, data) = setup();
    let run = tmp.path().join("s");
    let r = run.to_str().unwrap();
    ok(&small_args("gan", &data, r, &["--max-steps", "4"]));
    let ptr: serde_json::Value =
        serde_json::from_str(&read(&run.join("checkpoints/latest.json"))).unwrap();
    let target = run
        .join("checkpoints")
        .join(ptr["dir"].as_str().unwrap())
        .join("g.safetensors");
    let t = target.to_str().unwrap();
    fails(
        &["sample", "--checkpoint", r, "--out", t, "--n", "4"],
        "checkpoints folder",
    );
    // The run still loads.
    let png = tmp.path().join("ok.png");
    ok(&[
        "sample",
        "--checkpoint",
        r,
        "--out",
        png.to_str().unwrap(),
        "--n",
        "4",
    ]);
}

#[test]
fn corrupt_weights_fall_back_to_the_previous_checkpoint() {
    let (tmp, data) = setup();
    let run = tmp.path().join("c");
    let r = run.to_str().unwrap();
    ok(&small_args(
        "gan",
        &data,
        r,
        &["--max-steps", "6", "--checkpoint-every", "2"],
    ));
    let newest = run.join("checkpoints/step-000000006/g.safetensors");
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 400..] {
        *b ^= 0x5a;
    }
    std::fs::write(&newest, bytes).unwrap();
    let png = tmp.path().join("c.png");
    let err = ok(&[
        "sample",
        "--checkpoint",
        r,
        "--out",
        png.to_str().unwrap(),
        "--n",
        "4",
    ]);
    assert!(
        err.contains("corrupt") && err.contains("previous checkpoint"),
        "{err}"
    );
}

#[test]
fn one_line_per_epoch_after_an_interruption() {
    let (tmp, data) = setup();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&small_args(
        "gan",
        &data,
        a.to_str().unwrap(),
        &["--epochs", "2"],
    ));
    // Stopped in the middle of epoch 2 (4 steps an epoch), then resumed.
    ok(&small_args(
        "gan",
        &data,
        b.to_str().unwrap(),
        &["--epochs", "2", "--max-steps", "6"],
    ));
    ok(&resume_args(&data, b.to_str().unwrap(), &[]));
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        read(&p.join("epochs.jsonl"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (la, lb) = (lines(&a), lines(&b));
    assert_eq!(lb.len(), 2, "one line per epoch: {lb:?}");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x["epoch"], y["epoch"]);
        assert_eq!(
            x["means"], y["means"],
            "means over all of the epoch's steps"
        );
    }
}

#[test]
fn two_writers_on_one_folder_the_second_is_refused() {
    let (tmp, data) = setup();
    let run = tmp.path().join("w");
    let r = run.to_str().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_gan-cli"))
        .args(small_args("gan", &data, r, &["--epochs", "100000"]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the first holds the lock and has written its config.
    for _ in 0..200 {
        if run.join("config.json").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        fails(
            &small_args("gan", &data, r, &[]),
            "in use by another training process",
        );
        fails(
            &resume_args(&data, r, &["--epochs", "200000"]),
            "in use by another training process",
        );
    }
    // kill -9: the lock goes with the process, and the folder is usable at once.
    first.kill().unwrap();
    first.wait().unwrap();
    let out = cli(&resume_args(&data, r, &["--max-steps", "1"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("in use"),
        "the dead writer's lock outlived it:\n{err}"
    );
}

/// A 400-step run killed with SIGKILL at ten pseudo-random moments, resumed after each
/// kill (or started again when the kill came before it wrote its config), ends with
/// the same log and the same checkpoint files, byte for byte, as a run never killed.
#[test]
fn sigkill_at_random_moments_always_resumes_bit_for_bit() {
    let (tmp, data) = setup();
    let extra = ["--epochs", "100", "--checkpoint-every", "7"];
    let straight = tmp.path().join("straight");
    ok(&small_args(
        "gan",
        &data,
        straight.to_str().unwrap(),
        &extra,
    ));

    let run = tmp.path().join("killed");
    let r = run.to_str().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for _ in 0..10 {
        let args = if run.join("config.json").exists() {
            resume_args(&data, r, &[])
        } else {
            small_args("gan", &data, r, &extra)
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_gan-cli"))
            .args(&args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The moment is counted in progress, not in time, so that a loaded machine
        // still sees every kill land before the run ends: after 0-3 new checkpoints (0:
        // during start-up), then 0-15 ms more, which falls in a step or in a write.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (checkpoints, ms) = (seed % 4, (seed >> 8) % 16);
        let pointer = run.join("checkpoints/latest.json");
        let mut last = std::fs::read_to_string(&pointer).ok();
        let mut seen = 0;
        while seen < checkpoints && child.try_wait().unwrap().is_none() {
            let now = std::fs::read_to_string(&pointer).ok();
            if now != last {
                seen += 1;
                last = now;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("error:") && !err.contains("panicked"),
            "after {kills} kills, gan-cli {args:?}:\n{err}"
        );
        if final_done(&run) {
            break;
        }
    }
    assert!(
        kills >= 8,
        "only {kills} kills landed: the run is too short to test"
    );
    if !final_done(&run) {
        if run.join("config.json").exists() {
            ok(&resume_args(&data, r, &[]));
        } else {
            ok(&small_args("gan", &data, r, &extra));
        }
    }
    assert_eq!(
        read(&straight.join("metrics.jsonl")),
        read(&run.join("metrics.jsonl")),
        "the log of the killed run differs"
    );
    assert_eq!(
        final_files(&straight),
        final_files(&run),
        "the final checkpoints differ"
    );
    let lines = read(&run.join("epochs.jsonl")).lines().count();
    assert_eq!(lines, 100, "one epochs.jsonl line per epoch");
    eprintln!("{kills} kills");
}

/// Whether the run has written the checkpoint of its last step (100 epochs of 4).
fn final_done(run: &Path) -> bool {
    std::fs::read_to_string(run.join("checkpoints/latest.json"))
        .is_ok_and(|t| t.contains("step-000000400"))
}

#[test]
fn non_finite_weights_give_no_samples() {
    let (tmp, data) = setup();
    let run = tmp.path().join("n");
    let r = run.to_str().unwrap();
    ok(&small_args("gan", &data, r, &["--max-steps", "4"]));
    // NaN weights with a matching hash, as a run that diverged without the guard (or a
    // hand-edited file) would leave.
    let ptr: serde_json::Value =
        serde_json::from_str(&read(&run.join("checkpoints/latest.json"))).unwrap();
    let dir = run.join("checkpoints").join(ptr["dir"].as_str().unwrap());
    let mut state: serde_json::Value =
        serde_json::from_str(&read(&dir.join("state.json"))).unwrap();
    // G's weights and the running average that sampling reads (the GAN keeps one by
    // default).
    for file in ["g.safetensors", "g.ema.safetensors"] {
        let g = dir.join(file);
        let tensors =
            gan_core::engine::checkpoint::load_tensors(&g, &candle_core::Device::Cpu).unwrap();
        let nan: std::collections::HashMap<_, _> = tensors
            .into_iter()
            .map(|(k, t)| (k, (t * f64::NAN).unwrap()))
            .collect();
        let sha =
            gan_core::engine::checkpoint::save_tensors(&g, &nan, &Default::default()).unwrap();
        state["files"][file] = sha.into();
    }
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    let png = tmp.path().join("n.png");
    fails(
        &[
            "sample",
            "--checkpoint",
            r,
            "--out",
            png.to_str().unwrap(),
            "--n",
            "4",
        ],
        "NaN",
    );
    assert!(!png.exists());
}
