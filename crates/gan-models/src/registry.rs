//! The one list of models: what `gan-cli`, `sample`, `eval`, `report`, the benchmarks
//! and the tests enumerate. A model joins by implementing [`Registered`] in its own file
//! and adding one line to [`MODELS`].

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use gan_core::Model;
use serde::{de::DeserializeOwned, Serialize};

/// What a model file declares to be listed: its name, one line about it, its config
/// (whose clap attributes are both its CLI arguments and its defaults), and how to build it.
pub trait Registered: Model + Sized + 'static {
    /// Its settings: CLI arguments, defaults and the run's `model_config`, all in one.
    type Config: Args + FromArgMatches + Serialize + DeserializeOwned + Default;
    /// The subcommand and checkpoint name (`gan`, `dcgan`, ...).
    const KIND: &'static str;
    /// One line for `gan-cli --help`.
    const ABOUT: &'static str;
    /// Passes over the training set when `--epochs` is not given: what the model needs
    /// to reach its documented result.
    const EPOCHS: usize = 5;
    /// The decay of the running average of [`Model::averaged`]'s weights that samples
    /// are drawn from when `--ema-decay` is not given; `None`: no average.
    const EMA: Option<f64> = None;
    /// Builds every network on `device`, weights drawn from `seed`.
    fn build(cfg: Self::Config, device: &Device, seed: u64) -> Result<Self>;
    /// Learning rates of networks that do not use the run's `--lr`.
    fn network_lr(_cfg: &Self::Config) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

/// The generator's learning rate of the GAN family (gan, infogan's G and Q): 5x
/// D's 2e-4, InfoGAN's pair, which took the MNIST-FID of DCGAN and of the MLP GAN far down
/// at equal epochs (docs/RESULTS.md).
pub(crate) fn g_lr() -> f64 {
    1e-3
}

/// A model as the registry lists it: plain function pointers, so the list is a constant.
pub struct Entry {
    /// [`Registered::KIND`].
    pub kind: &'static str,
    /// [`Registered::ABOUT`].
    pub about: &'static str,
    /// [`Registered::EPOCHS`].
    pub epochs: usize,
    /// [`Registered::EMA`].
    pub ema: Option<f64>,
    /// Adds the config's arguments to a subcommand.
    pub args: fn(Command) -> Command,
    /// The config the arguments give, as a run records it, and its per-network learning
    /// rates.
    pub from_args: fn(&ArgMatches) -> Result<Parsed>,
    /// Its default config, as a run records it.
    pub default_config: fn() -> serde_json::Value,
    /// Rebuilds the model from a recorded config.
    pub build: fn(&serde_json::Value, &Device, u64) -> Result<Box<dyn Model>>,
}

/// A config read from the command line.
pub struct Parsed {
    /// The model's config as `config.json` records it.
    pub config: serde_json::Value,
    /// Per-network learning rates, for the training settings.
    pub network_lr: Vec<(&'static str, f64)>,
}

fn args<M: Registered>(cmd: Command) -> Command {
    M::Config::augment_args(cmd)
}

fn from_args<M: Registered>(m: &ArgMatches) -> Result<Parsed> {
    let cfg = M::Config::from_arg_matches(m)?;
    Ok(Parsed {
        config: serde_json::to_value(&cfg)?,
        network_lr: M::network_lr(&cfg),
    })
}

fn default_config<M: Registered>() -> serde_json::Value {
    serde_json::to_value(M::Config::default()).expect("a config serialises")
}

fn build<M: Registered>(v: &serde_json::Value, dev: &Device, seed: u64) -> Result<Box<dyn Model>> {
    let cfg: M::Config = serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("bad {} config {v}: {e}", M::KIND))?;
    Ok(Box::new(M::build(cfg, dev, seed)?))
}

/// The registry line of model `M`.
pub const fn entry<M: Registered>() -> Entry {
    Entry {
        kind: M::KIND,
        about: M::ABOUT,
        epochs: M::EPOCHS,
        ema: M::EMA,
        args: args::<M>,
        from_args: from_args::<M>,
        default_config: default_config::<M>,
        build: build::<M>,
    }
}

/// Every model of gan-rs, in the order the CLI lists them.
pub static MODELS: &[Entry] = &[
    entry::<crate::Gan>(),
    entry::<crate::Dcgan>(),
    entry::<crate::Cgan>(),
    entry::<crate::Infogan>(),
    entry::<crate::Ae>(),
    entry::<crate::Vae>(),
    entry::<crate::Vaegan>(),
    entry::<crate::Bigan>(),
    entry::<crate::Dann>(),
    entry::<crate::Disentangle>(),
    entry::<crate::Dpredict>(),
    entry::<crate::Triplegan>(),
];

/// The names of every model, in registry order.
pub fn kinds() -> Vec<&'static str> {
    MODELS.iter().map(|e| e.kind).collect()
}

/// The registry line of `kind`.
pub fn find(kind: &str) -> Result<&'static Entry> {
    match MODELS.iter().find(|e| e.kind == kind) {
        Some(e) => Ok(e),
        None => bail!(
            "unknown model {kind:?}: this build knows {}",
            MODELS.iter().map(|e| e.kind).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Rebuilds a model from the `kind` and `config` a run folder records.
pub fn build_model(
    kind: &str,
    config: &serde_json::Value,
    device: &Device,
    seed: u64,
) -> Result<Box<dyn Model>> {
    (find(kind)?.build)(config, device, seed)
}

/// For `skip_serializing_if`: an option added after runs were saved is left out of the
/// config at its default, so those runs' checkpoints still match.
pub(crate) fn is_default<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// The defaults a config's clap attributes declare: the one place they are written.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let cmd = T::augment_args(Command::new("defaults"));
    let m = cmd
        .try_get_matches_from(["defaults"])
        .expect("every argument of a model config has a default");
    T::from_arg_matches(&m).expect("the defaults parse")
}
