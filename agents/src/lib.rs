//! M3ixup encoders, losses and actor-critic agents on burn.
//!
//! - [`encoder`]: modality processors, joint processor and projection head built from an
//!   observation space (GMC's model, docs/M3IXUP.md section 1), with the missing-modality fallback;
//! - [`conv`]: the conv trunks' convolutions on burn's CPU backend, as gathers and one gemm;
//! - [`losses`]: the GMC InfoNCE, SoftNCE and the M3ixup terms as pure functions, and the
//!   weighted total with its config and report (docs/M3IXUP.md section 3);
//! - [`run`]: the run directory of every training binary (config, metrics CSV and JSON lines,
//!   atomic checkpoint writes);
//! - [`pretrain`]: offline pretraining of the encoders on random-policy data (the paper's
//!   protocol), with validation retrieval accuracy and checkpoints.

pub use m3ixup_envs as envs;

pub mod actor_critic;
pub mod algorithm;
pub mod checkpoint;
pub mod conv;
pub mod ddpg;
pub mod encoder;
pub mod evaluate;
pub mod harness;
pub mod losses;
pub mod off_policy;
pub mod optim;
pub mod ppo;
pub mod pretrain;
pub mod progress;
pub mod replay;
pub mod rollout;
pub mod run;
pub mod sac;
pub mod sections;
pub mod storage;

pub use encoder::{
    EncoderConfig, EncoderError, Features, FirstLayer, JointKind, M3ixupEncoder, ModalityTensor, MultimodalInput,
    PixelTrunk, Presence,
};
pub use losses::{m3ixup_loss, LossConfigError, M3ixupLossConfig, M3ixupReport};
