//! Multimodal reinforcement-learning environments with Gymnasium semantics.
//!
//! This crate has no deep-learning dependency: authors of custom environments depend on it alone.
//!
//! - [`spaces`]: observation spaces of named modalities, Box and Discrete action spaces;
//! - [`Env`]: `reset(seed)` / `step(action)` with `terminated` vs `truncated`;
//! - [`wrappers`]: time limit, frame stack, sensor dropout, episode statistics;
//! - [`VecEnv`]: batches of environments, inline or on worker threads, same-step autoreset;
//! - [`check_env`]: the conformance check any environment can be run through;
//! - [`registry`]: environments by name with TOML parameters, open to user environments;
//! - [`builtin`]: `multimodal-pendulum`, `pixel-cartpole`, `reacher`;
//! - `gym` (feature `python`): any Python Gymnasium environment as an [`Env`], `gym:<id>`.

pub mod builtin;
pub mod check;
pub mod env;
pub mod error;
#[cfg(feature = "python")]
pub mod gym;
pub mod registered;
pub mod registry;
pub mod render;
pub mod spaces;
pub mod state;
pub mod vector;
pub mod wrappers;

pub use check::{check_env, CheckReport};
pub use env::{validate_action, Env, Info, ModalityData, Obs, Step, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN};
pub use error::EnvError;
pub use registered::{
    frame_stack, is_registered, make, max_episode_steps, register, registered_names, standard_registry,
};
pub use registry::Registry;
pub use spaces::{Action, ActionSpace, DType, ModalitySpec, ObsSpace};
pub use state::{EnvRng, EnvState};
pub use vector::{BatchActions, BatchObs, VecEnv, VecEnvConfig, VecEnvState, VecStep};
