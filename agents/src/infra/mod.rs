//! Shared infrastructure of every training run, whatever the algorithm: the run directory and its
//! metrics files ([`run`]), the training harness ([`harness`]), checkpoints and the error type of
//! training ([`checkpoint`]), gradient clipping ([`optim`]) and the progress bar ([`progress`]).
//!
//! The one reach upwards: [`checkpoint::TrainError`] wraps the encoder's, the replay buffer's
//! and pretraining's errors by type, so that every layer reports through one error.

pub mod checkpoint;
pub mod harness;
pub mod optim;
pub mod progress;
pub mod run;
