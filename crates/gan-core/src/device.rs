//! Choosing where tensors live.

use anyhow::{bail, Result};
use candle_core::Device;

/// The device named `cpu`, `cuda` (`cuda:N`) or `metal`. Asking for an accelerator this
/// binary was built without is an error that says how to build with it.
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => match n.parse::<usize>() {
            Ok(n) => (k, n),
            Err(_) => bail!("bad device {name:?}: the ordinal after ':' must be a number"),
        },
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Ok(Device::new_cuda(ordinal)?),
        "metal" if cfg!(feature = "metal") => Ok(Device::new_metal(ordinal)?),
        "cuda" | "metal" => bail!(
            "this binary was built without {kind} support: run it through \
             `cargo xtask run --device {kind} -- ...` (or build gan-cli with `--features {kind}`)"
        ),
        other => bail!("unknown device {other:?}: use cpu, cuda or metal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert!(parse_device("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            assert!(parse_device("cuda")
                .unwrap_err()
                .to_string()
                .contains("built without"));
        }
    }
}
