//! m3ixup: reinforcement learning from several sensors at once.
//!
//! This crate is the facade and the home of the binaries (`train`, `evaluate`, `pretrain`,
//! `report`, `bench`): [`device`] chooses the backend, [`jobs`] runs training, pretraining and
//! evaluation on it, [`plot`] draws the charts, [`report`] tables the results of many runs. The work is done in two crates:
//! - [`envs`] (`m3ixup-envs`): multimodal environments, wrappers, vector environments, with no
//!   deep-learning dependency, so custom environments compile without burn;
//! - [`agents`] (`m3ixup-agents`): M3ixup encoders, losses and agents on burn.

pub use m3ixup_agents as agents;
pub use m3ixup_envs as envs;

pub mod alloc;
pub mod bench;
pub mod config;
pub mod device;
pub mod jobs;
pub mod plot;
pub mod report;
