//! The engine: the contract a model signs ([`model`]), the data streams it reads
//! ([`data`]), the loop that trains it ([`trainer`]), and the run folder that loop writes
//! ([`run`], [`checkpoint`], [`grid`], [`plot`]), which one process at a time writes
//! ([`lock`]).

pub mod checkpoint;
pub mod data;
pub mod ema;
pub mod grid;
pub mod lock;
pub mod model;
pub mod plot;
pub mod run;
pub mod trainer;

pub use data::{Batches, Cursor, Dataset, Streams};
pub use model::{
    no_such_phase, Batch, Classifier, Completer, Conditioning, Disentangler, Domain, DomainAdapter,
    Encoder, Every, Figure, Generator, Model, Phase, Source, Step, StepOutput, Stream,
};
pub use run::{
    ensure_finite, latest_checkpoint, load_step_weights, load_weights, EpochSummary, RunConfig,
    TrainConfig,
};
pub use trainer::Trainer;
