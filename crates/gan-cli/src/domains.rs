//! The data a model's streams name (`gan_core::Source`), loaded through gan-data: MNIST
//! in one or three channels, and the target domains of domain adaptation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use gan_core::{Dataset, Model, Source, Streams};
use gan_data::{Split, SplitKind, Verify};

/// Where the target domains come from (models that read one: `dann`).
#[derive(Args, Clone, Debug)]
pub(crate) struct DomainArgs {
    /// Folder of colour photographs (PNG or JPEG) that the MNIST-M-style domain crops its
    /// backgrounds from; built once into assets/data/mnistm-style-seed<S>/ and reused.
    #[arg(long, default_value = "assets/backgrounds")]
    pub backgrounds: PathBuf,
    /// Seed of the MNIST-M-style build (which photo and crop each digit gets).
    #[arg(long, default_value_t = 0)]
    pub mnistm_seed: u64,
    /// A real MNIST-M folder (mnist_m/ with mnist_m_train/, mnist_m_train_labels.txt,
    /// and the same for test), used instead of building the MNIST-M-style one.
    #[arg(long)]
    pub mnist_m: Option<PathBuf>,
    /// The UCI handwritten digits file (1,797 rows of 64 pixels and a label, gzip CSV);
    /// downloaded there (scikit-learn's copy, SHA-256 checked) when missing.
    #[arg(long, default_value = gan_data::DEFAULT_UCI_DIGITS)]
    pub uci_digits: PathBuf,
}

/// Split `kind` of domain `name`, MNIST's own files in `mnist_dir`.
pub(crate) fn load_domain(
    name: &str,
    kind: SplitKind,
    mnist_dir: &Path,
    verify: bool,
    args: &DomainArgs,
    device: &Device,
) -> Result<Split> {
    let check = if verify {
        Verify::Canonical
    } else {
        Verify::Skip
    };
    match name {
        "mnist" => crate::load_split(mnist_dir, kind, verify, device),
        "mnistm" => match &args.mnist_m {
            Some(root) => gan_data::load_mnist_m_folder(root, kind, device),
            None => {
                if !args.backgrounds.is_dir() {
                    bail!(
                        "the MNIST-M-style domain needs a folder of colour photographs to crop \
                         backgrounds from: {} does not exist (pass --backgrounds DIR, or a real \
                         MNIST-M with --mnist-m DIR)",
                        args.backgrounds.display()
                    )
                }
                // MNIST first, downloaded if missing: the set is built from it.
                crate::load_split(mnist_dir, SplitKind::Test, verify, &Device::Cpu)?;
                let root = Path::new(gan_data::DEFAULT_DATA_ROOT);
                let set = gan_data::ensure_mnistm_style(
                    mnist_dir,
                    &args.backgrounds,
                    root,
                    args.mnistm_seed,
                    check,
                )?;
                if let Some(why) = &set.built {
                    eprintln!(
                        "built the MNIST-M-style set in {} ({why})",
                        set.dir.display()
                    );
                }
                // Just verified (or written) by `ensure`: not hashed again.
                set.load(kind, device)
            }
        },
        "uci" => {
            let path = &args.uci_digits;
            if !path.exists() {
                eprintln!(
                    "the UCI digits are not at {}: downloading them",
                    path.display()
                );
                let url = gan_data::ensure_uci_digits(path, &gan_data::uci_mirrors())
                    .with_context(|| {
                        format!(
                            "the UCI digits are missing from {} and could not be downloaded; \
                             import a local copy of scikit-learn's digits.csv.gz with `cargo \
                             xtask fetch-uci --from FILE --to {}` or point --uci-digits at one",
                            path.display(),
                            path.display()
                        )
                    })?;
                if let Some(url) = url {
                    eprintln!("{}: downloaded from {url}, verified", path.display());
                }
            }
            gan_data::load_uci_split(&args.uci_digits, kind, check, device).with_context(|| {
                format!(
                    "the UCI digits domain reads {} (pass --uci-digits FILE)",
                    args.uci_digits.display()
                )
            })
        }
        other => bail!("unknown domain {other:?}: gan-rs knows mnist, mnistm and uci"),
    }
}

/// `split`'s images in `channels` (MNIST's grey repeated to sit beside a colour domain).
pub(crate) fn in_channels(split: Split, channels: usize, what: &str) -> Result<Split> {
    let have = split.images.dim(1)?;
    let images = match (have, channels) {
        (a, b) if a == b => split.images,
        (1, 3) => split.images.repeat((1, 3, 1, 1))?,
        _ => bail!("{what} has {have}-channel images; the model reads {channels}"),
    };
    Ok(Split { images, ..split })
}

/// The training-set indices of each labelled subset drawn, by stream name.
pub(crate) type Subsets = Vec<(String, Vec<usize>)>;

/// The training data of every stream `model` declares, and the training-set indices of
/// each labelled subset it drew (by stream name), for the run to record.
pub(crate) fn load_streams(
    model: &dyn Model,
    mnist_dir: &Path,
    verify: bool,
    args: &DomainArgs,
    device: &Device,
) -> Result<(Streams, Subsets)> {
    let mut streams = Streams::default();
    let mut subsets = Vec::new();
    for stream in model.streams() {
        let (name, labels) = match stream.source {
            Source::Mnist { .. } | Source::MnistLabelled { .. } => ("mnist", true),
            Source::Domain { name, labels, .. } => (name, labels),
        };
        let mut split = load_domain(name, SplitKind::Train, mnist_dir, verify, args, device)?;
        if let Source::MnistLabelled { per_class, seed } = stream.source {
            let picked = gan_data::balanced_subset(&split.labels_u8, per_class, 10, seed)
                .with_context(|| format!("the labelled stream {:?}", stream.name))?;
            split = gan_data::select(&split, &picked)?;
            subsets.push((stream.name.to_string(), picked));
        }
        let split = in_channels(split, stream.source.channels(), name)?;
        let data = Dataset::new(split.images, labels.then_some(split.labels))?;
        streams = streams.with(stream.name, data);
    }
    Ok((streams, subsets))
}

/// Records the labelled subsets a run trains on as `<run>/labelled.json`: stream name to
/// MNIST training-set indices, so anyone can see (and reuse) which digits had labels.
pub(crate) fn record_subsets(run_dir: &Path, subsets: &Subsets) -> Result<()> {
    if subsets.is_empty() {
        return Ok(());
    }
    let map: serde_json::Map<String, serde_json::Value> = subsets
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    let path = run_dir.join("labelled.json");
    gan_core::engine::checkpoint::atomic_write(&path, serde_json::to_string(&map)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
