//! The process-wide registry behind [`make`]: the built-in environments, the `gym` family where
//! the `python` feature compiles it in, and what users [`register`]. The one place that knows
//! which environments exist (as Gymnasium's `gymnasium/envs/__init__.py`); the [`Registry`]
//! type itself knows none.

use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;

use crate::registry::{EnvDefaults, Registry};
use crate::{Env, EnvError};

/// A registry with every environment this build has: the built-in ones and, with the `python`
/// feature, the `gym:<id>` family (without it, `gym:<id>` names the feature it needs).
pub fn standard_registry() -> Registry {
    let mut registry = Registry::new();
    crate::builtin::register(&mut registry);
    #[cfg(feature = "python")]
    crate::gym::register(&mut registry);
    #[cfg(not(feature = "python"))]
    registry.register_absent_family(
        "gym",
        "Gymnasium environments (`gym:<id>`) need m3ixup built with the `python` feature \
         (for example `cargo run --features python ...`)",
    );
    registry
}

fn global() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(standard_registry()))
}

/// Registers an environment in the process-wide registry used by [`make`] (and so by the
/// `train`, `evaluate` and `pretrain` entry points).
pub fn register<C, E, F>(name: &str, defaults: EnvDefaults, make: F)
where
    C: DeserializeOwned,
    E: Env + 'static,
    F: Fn(C) -> Result<E, EnvError> + Send + Sync + 'static,
{
    global().write().unwrap_or_else(|e| e.into_inner()).register_typed(name, defaults, make);
}

/// Builds a registered environment from the process-wide registry.
pub fn make(name: &str, params: &toml::Table) -> Result<Box<dyn Env>, EnvError> {
    global().read().unwrap_or_else(|e| e.into_inner()).make(name, params)
}

/// Frames per observation of a registered environment with `params` (see
/// [`Registry::frame_stack`]).
pub fn frame_stack(name: &str, params: &toml::Table) -> Result<usize, EnvError> {
    global().read().unwrap_or_else(|e| e.into_inner()).frame_stack(name, params)
}

/// The episode limit of a registered environment with `params` (see
/// [`Registry::max_episode_steps`]).
pub fn max_episode_steps(name: &str, params: &toml::Table) -> Result<Option<usize>, EnvError> {
    global().read().unwrap_or_else(|e| e.into_inner()).max_episode_steps(name, params)
}

/// Names in the process-wide registry, sorted (families such as `gym:<id>` are not listed: use
/// [`is_registered`] to check a name).
pub fn registered_names() -> Vec<String> {
    global().read().unwrap_or_else(|e| e.into_inner()).names()
}

/// Whether [`make`] knows `name`: a registered name, or `family:<id>` of a registered family
/// (`gym:Pendulum-v1` with feature `python`).
pub fn is_registered(name: &str) -> bool {
    global().read().unwrap_or_else(|e| e.into_inner()).contains(name)
}
