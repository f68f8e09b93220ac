//! gan-data: MNIST, and other digit domains, for gan-rs.
//!
//! Downloads the canonical IDX files from public mirrors (or imports a local copy),
//! verifies them against their canonical SHA-256, and loads them as candle tensors in
//! the [-1, 1] range the generators' tanh outputs live in, so real and generated images
//! are compared on the same scale. Bad input is an error that names the file and what is
//! wrong with it, never a panic.
//!
//! - [`idx`]: the IDX format, raw or gzip;
//! - [`mnist`]: the file table, verification, loading into tensors;
//! - [`fetch`]: download with mirror fail-over, import of a local copy, atomic storage;
//! - [`mnistm`]: target domains for domain adaptation in colour: MNIST-M-style digits
//!   built from MNIST and photos by Ganin & Lempitsky's recipe, or the real MNIST-M;
//! - [`uci`]: the UCI 8x8 handwritten digits, upsampled to 28x28, a second grey domain;
//! - [`subset`]: the few labelled examples of semi-supervised learning, balanced, by seed.
//!
//! Every domain loads as the same [`Split`]: `[n, c, 28, 28]` f32 in [-1, 1] (`c` = 1 or
//! 3) and u8/u32 labels, so the engine's datasets take any of them.
//!
//! Shuffling and batching are the engine's (`gan_core::engine::data`): this crate knows
//! nothing of training.

pub mod fetch;
pub mod idx;
pub mod mnist;
pub mod mnistm;
mod store;
pub mod subset;
pub mod uci;

pub use fetch::{
    download_file_to, download_files, download_mnist, ensure_files, ensure_mnist, import_file_to,
    import_files, import_mnist, mirrors, FetchReport, FileSpec, MIRRORS,
};
pub use mnist::{
    load_mnist, load_split, Mnist, Split, SplitKind, Verify, DEFAULT_DATA_DIR, MNIST_FILES,
};
pub use mnistm::{
    blend, compose, draw_crop, draw_crops, ensure_mnistm_style, load_mnist_m_folder,
    load_mnistm_style, load_mnistm_style_split, mnistm_style_dir, read_photos, Crop, MnistmCard,
    MnistmStyle, Photo,
};
pub use subset::{balanced_subset, select};
pub use uci::{
    ensure_uci_digits, import_uci_digits, load_uci, load_uci_split, parse_uci_csv, read_uci_digits,
    uci_mirrors, uci_spec, uci_split, upsample_uci, UciDigits, DEFAULT_UCI_DIGITS, UCI_MIRRORS,
};

/// Where the project keeps derived data sets (MNIST-M-style folders) unless told otherwise,
/// relative to the workspace root: the folder above [`DEFAULT_DATA_DIR`], ignored by git.
pub const DEFAULT_DATA_ROOT: &str = "assets/data";
