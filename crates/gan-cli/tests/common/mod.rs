//! What the CLI tests share: a tiny MNIST-format folder and ways to run gan-cli.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn write_idx(dir: &Path, name: &str, magic: u32, dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// 64 images of a bar at a varying place, labels cycling 0-9.
pub fn tiny_mnist(dir: &Path) {
    let n = 64u32;
    let mut px = vec![0u8; 64 * 784];
    for i in 0..64 {
        let col = 4 + i % 20;
        for y in 4..24 {
            px[i * 784 + y * 28 + col] = 255;
        }
    }
    let labels: Vec<u8> = (0..64).map(|i| (i % 10) as u8).collect();
    write_idx(dir, "train-images-idx3-ubyte", 0x803, &[n, 28, 28], &px);
    write_idx(dir, "train-labels-idx1-ubyte", 0x801, &[n], &labels);
    write_idx(dir, "t10k-images-idx3-ubyte", 0x803, &[n, 28, 28], &px);
    write_idx(dir, "t10k-labels-idx1-ubyte", 0x801, &[n], &labels);
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gan-cli"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(args: &[&str]) -> String {
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "gan-cli {args:?} failed:\n{err}");
    err
}

/// Runs gan-cli, asserts success, returns its stdout.
pub fn ok_stdout(args: &[&str]) -> String {
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gan-cli {args:?} failed:\n{err}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn fails(args: &[&str], needle: &str) {
    let out = cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gan-cli {args:?} should have failed");
    assert!(
        err.contains(needle),
        "gan-cli {args:?}: expected {needle:?} in:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "gan-cli {args:?} panicked:\n{err}"
    );
}

/// A small run of `kind` (gan, cgan) on the tiny MNIST: z 8, hidden width 32, batches of
/// 16 (4 steps an epoch), quiet, the data not verified; `extra` appended.
pub fn small_args<'a>(
    kind: &'a str,
    data: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        kind,
        "--data-dir",
        data,
        "--no-verify",
        "--quiet",
        "--z-dim",
        "8",
        "--hidden",
        "32",
        "--batch-size",
        "16",
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}
