//! The GAN family of the lecture notes, each model one file: a [`gan_core::Model`] that
//! the shared engine trains, plus its line in the [`registry`].

pub mod ae;
pub mod bigan;
pub mod cgan;
pub mod dann;
pub mod dcgan;
pub mod disentangle;
pub mod dpredict;
pub(crate) mod encdec;
pub mod gan;
pub mod infogan;
pub mod registry;
pub mod triplegan;
pub mod vae;
pub mod vaegan;

use anyhow::{bail, Result};

pub use ae::{Ae, AeConfig};
pub use bigan::{Bigan, BiganConfig};
pub use cgan::{Cgan, CganConfig};
pub use dann::{Dann, DannConfig};
pub use dcgan::{Dcgan, DcganConfig};
pub use disentangle::{Disentangle, DisentangleConfig};
pub use dpredict::{Dpredict, DpredictConfig};
pub use gan::{Gan, GanConfig};
pub use infogan::{Infogan, InfoganConfig};
pub use registry::{build_model as build, find, Entry, Registered, MODELS};
pub use triplegan::{Triplegan, TripleganConfig};
pub use vae::{Vae, VaeConfig};
pub use vaegan::{Vaegan, VaeganConfig};

/// Refuses a class for a model that takes none.
pub(crate) fn unconditional(kind: &str, class: Option<u32>) -> Result<()> {
    if let Some(c) = class {
        bail!("{kind} is unconditional: it cannot be asked for class {c} (--label applies to cgan)")
    }
    Ok(())
}
