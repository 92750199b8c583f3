//! M3ixup encoders, losses and actor-critic agents on burn, in three layers, each using only the
//! ones before it:
//!
//! - [`infra`]: what every training run shares, whatever the algorithm: the run directory and
//!   its metrics, the training harness, checkpoints and errors, the shared config sections;
//! - [`representation`]: representation learning: the M3ixup encoders (GMC's model,
//!   docs/M3IXUP.md section 1), the GMC and M3ixup losses as pure functions (section 3), and
//!   offline pretraining of the encoders (the paper's protocol);
//! - [`algorithms`]: the RL algorithms (PPO, SAC, DDPG) behind one trait, with the registry
//!   that finds one by name.
//!
//! Then [`evaluate`]: any trained agent under sensor failures.

pub use m3ixup_envs as envs;

pub mod algorithms;
pub mod evaluate;
pub mod infra;
pub mod representation;

pub use representation::encoder::{
    EncoderConfig, EncoderError, Features, FirstLayer, JointKind, M3ixupEncoder, ModalityTensor, MultimodalInput,
    PixelTrunk, Presence,
};
pub use representation::losses::{m3ixup_loss, LossConfigError, M3ixupLossConfig, M3ixupReport};
