//! gan-data: MNIST for gan-rs.
//!
//! Downloads the canonical IDX files from public mirrors (or imports a local copy),
//! verifies them against their canonical SHA-256, and loads them as candle tensors in
//! the [-1, 1] range the generators' tanh outputs live in, so real and generated images
//! are compared on the same scale. Bad input is an error that names the file and what is
//! wrong with it, never a panic.
//!
//! - [`idx`]: the IDX format, raw or gzip;
//! - [`mnist`]: the file table, verification, loading into tensors;
//! - [`fetch`]: download with mirror fail-over, import of a local copy, atomic storage.
//!
//! Shuffling and batching are the engine's (`gan_core::engine::data`): this crate knows
//! nothing of training.

pub mod fetch;
pub mod idx;
pub mod mnist;

pub use fetch::{
    download_files, download_mnist, ensure_files, ensure_mnist, import_files, import_mnist,
    mirrors, FetchReport, FileSpec, MIRRORS,
};
pub use mnist::{
    load_mnist, load_split, Mnist, Split, SplitKind, Verify, DEFAULT_DATA_DIR, MNIST_FILES,
};
