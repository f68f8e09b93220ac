//! The GAN family of the lecture notes, each model a [`gan_core::GanModel`] that the
//! shared engine trains.

pub mod cgan;
pub mod dcgan;
pub mod gan;
pub mod infogan;
pub mod judge;

use anyhow::{bail, Result};
use candle_core::Device;
use gan_core::GanModel;

pub use cgan::{Cgan, CganConfig};
pub use dcgan::{Dcgan, DcganConfig};
pub use gan::{Gan, GanConfig};
pub use infogan::{Infogan, InfoganConfig};
pub use judge::{Judge, JudgeConfig, JudgeTraining};

/// The model kinds this crate builds, as the CLI names them.
pub const KINDS: &[&str] = &["gan", "dcgan", "cgan", "infogan"];

/// Rebuilds a model from the `kind` and `config` a run folder records.
pub fn build(
    kind: &str,
    config: &serde_json::Value,
    device: &Device,
    seed: u64,
) -> Result<Box<dyn GanModel>> {
    fn cfg<T: serde::de::DeserializeOwned>(kind: &str, v: &serde_json::Value) -> Result<T> {
        serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("bad {kind} config {v}: {e}"))
    }
    Ok(match kind {
        "gan" => Box::new(Gan::new(cfg(kind, config)?, device, seed)?),
        "dcgan" => Box::new(Dcgan::new(cfg(kind, config)?, device, seed)?),
        "cgan" => Box::new(Cgan::new(cfg(kind, config)?, device, seed)?),
        "infogan" => Box::new(Infogan::new(cfg(kind, config)?, device, seed)?),
        other => bail!(
            "unknown model {other:?}: this build knows {}",
            KINDS.join(", ")
        ),
    })
}

/// Refuses a class for a model that takes none.
pub(crate) fn unconditional(kind: &str, class: Option<u32>) -> Result<()> {
    if let Some(c) = class {
        bail!("{kind} is unconditional: it cannot be asked for class {c} (--label applies to cgan)")
    }
    Ok(())
}
