//! Environments by name, with parameters from TOML.
//!
//! Every registered environment gets the same wrapper parameters, handled here (so a user's
//! environment gets them too):
//! - `frame_stack` (stack the last k frames of every modality; default per environment),
//! - `max_episode_steps` (time limit that sets `truncated`; default per environment, 0 = none),
//! - `sensor_dropout` (a [`DropoutMode`] table, e.g. `{ mode = "per-step", p = 0.3 }` or
//!   `{ mode = "per-episode", p = { pixels = 0.6, sound = 0.5 } }`; default none), and in its
//!   table `keep_data = true` to mark dropped modalities missing without clearing their data
//!   ([`SensorDropout::keeping_data`]).
//!
//! Every other key goes to the environment's own config, which rejects unknown keys.
//!
//! A *family* is an environment that takes the thing to wrap as its `id` parameter and is
//! selected as `family:<id>`: `gym:Pendulum-v1` is family `gym` (feature `python`, see
//! [`crate::gym`]) with `id = "Pendulum-v1"`. Families are not listed by [`Registry::names`]
//! (they cannot be built without an `id`); [`Registry::contains`] accepts `family:<id>`.
//! Wrapping order, inner to outer: environment, frame stack, time limit, sensor dropout,
//! episode statistics.
//!
//! As Gymnasium's `registration.py`, this module knows no environment: the environments
//! register themselves ([`crate::builtin::register`], [`crate::gym::register`]), and
//! [`crate::registered`] composes the process-wide registry that [`crate::make`] reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::wrappers::{DropoutMode, EpisodeStatistics, FrameStack, SensorDropout, TimeLimit};
use crate::{Env, EnvError};

/// Builds an environment (without wrappers) from its own parameters.
pub type EnvFactory = Arc<dyn Fn(&toml::Table) -> Result<Box<dyn Env>, EnvError> + Send + Sync>;

/// Wrapper parameters an environment uses when the caller gives none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvDefaults {
    pub frame_stack: usize,
    /// `None`: episodes end only when the environment terminates them.
    pub max_episode_steps: Option<usize>,
}

impl Default for EnvDefaults {
    fn default() -> Self {
        Self { frame_stack: 1, max_episode_steps: None }
    }
}

struct Entry {
    factory: EnvFactory,
    defaults: EnvDefaults,
}

/// A set of named environments.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    /// Environments selected as `family:<id>` (or by name with an `id` parameter).
    families: BTreeMap<String, Entry>,
    /// Families this build leaves out, with what would bring them in.
    absent_families: BTreeMap<String, String>,
}

const WRAPPER_KEYS: [&str; 3] = ["frame_stack", "max_episode_steps", "sensor_dropout"];

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) an environment whose factory reads the raw parameter table.
    pub fn register(&mut self, name: &str, defaults: EnvDefaults, factory: EnvFactory) {
        self.entries.insert(name.to_string(), Entry { factory, defaults });
    }

    /// Registers an environment configured by a serde struct `C`: the parameters are
    /// deserialised into `C` (use `#[serde(deny_unknown_fields, default)]` so that unknown keys
    /// are errors and missing keys take defaults) and handed to `make`.
    pub fn register_typed<C, E, F>(&mut self, name: &str, defaults: EnvDefaults, make: F)
    where
        C: DeserializeOwned,
        E: Env + 'static,
        F: Fn(C) -> Result<E, EnvError> + Send + Sync + 'static,
    {
        let env_name = name.to_string();
        let factory: EnvFactory = Arc::new(move |params: &toml::Table| {
            // Through the text form, so that a type error carries a span naming its key.
            let text = toml::to_string(params).map_err(|e| EnvError::InvalidParam {
                env: env_name.clone(),
                param: "(parameters)".into(),
                reason: e.to_string(),
            })?;
            let config: C = toml::from_str(&text).map_err(|e| param_error(&env_name, &text, &e))?;
            Ok(Box::new(make(config)?) as Box<dyn Env>)
        });
        self.register(name, defaults, factory);
    }

    /// Registers (or replaces) a family: `family:<id>` builds it with `id = "<id>"` added to the
    /// parameters (the factory reads `id` from its table).
    pub fn register_family(&mut self, family: &str, defaults: EnvDefaults, factory: EnvFactory) {
        self.families.insert(family.to_string(), Entry { factory, defaults });
    }

    /// Records that this build leaves out `family`: `family:<id>` then fails with `why` (for
    /// example, the Cargo feature that compiles it in).
    pub fn register_absent_family(&mut self, family: &str, why: &str) {
        self.absent_families.insert(family.to_string(), why.to_string());
    }

    /// Registered names, sorted (families not included: they need an `id`).
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Whether `make(name, ..)` would find an environment: a registered name or `family:<id>`.
    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// The entry `name` selects, and the `id` a `family:<id>` name carries.
    fn lookup<'a>(&self, name: &'a str) -> Option<(&Entry, Option<&'a str>)> {
        if let Some(entry) = self.entries.get(name) {
            return Some((entry, None));
        }
        if let Some(entry) = self.families.get(name) {
            return Some((entry, None));
        }
        let (family, id) = name.split_once(':')?;
        self.families.get(family).filter(|_| !id.is_empty()).map(|entry| (entry, Some(id)))
    }

    /// Builds environment `name` with `params` and wraps it (see the module documentation).
    pub fn make(&self, name: &str, params: &toml::Table) -> Result<Box<dyn Env>, EnvError> {
        let (entry, id) = self.lookup(name).ok_or_else(|| self.unknown(name))?;
        let wrapper = WrapperParams::parse(name, params, entry.defaults)?;
        let mut own: toml::Table = params
            .iter()
            .filter(|(k, _)| !WRAPPER_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(id) = id {
            match own.get("id") {
                Some(toml::Value::String(given)) if given != id => {
                    return Err(EnvError::InvalidParam {
                        env: name.to_string(),
                        param: "id".into(),
                        reason: format!("the name selects id `{id}`, the parameters say `{given}`"),
                    })
                }
                _ => {
                    own.insert("id".into(), toml::Value::String(id.to_string()));
                }
            }
        }
        let env = (entry.factory)(&own)?;
        wrapper.apply(env)
    }

    /// How many frames each observation of `make(name, params)` stacks (the `frame_stack`
    /// parameter, or the environment's default): what a replay buffer needs to share frames.
    pub fn frame_stack(&self, name: &str, params: &toml::Table) -> Result<usize, EnvError> {
        let (entry, _) = self.lookup(name).ok_or_else(|| self.unknown(name))?;
        Ok(WrapperParams::parse(name, params, entry.defaults)?.frame_stack)
    }

    /// The step at which `make(name, params)` truncates its episodes (the `max_episode_steps`
    /// parameter, or the environment's default; `None`: never), for Gymnasium's
    /// `spec.max_episode_steps`.
    pub fn max_episode_steps(&self, name: &str, params: &toml::Table) -> Result<Option<usize>, EnvError> {
        let (entry, _) = self.lookup(name).ok_or_else(|| self.unknown(name))?;
        Ok(WrapperParams::parse(name, params, entry.defaults)?.max_episode_steps)
    }

    fn unknown(&self, name: &str) -> EnvError {
        let family = name.split_once(':').map_or(name, |(family, _)| family);
        if let Some(why) = self.absent_families.get(family) {
            return EnvError::Other { env: name.to_string(), message: why.clone() };
        }
        let mut available = self.names();
        available.extend(self.families.keys().map(|f| format!("{f}:<id>")));
        EnvError::UnknownEnv { name: name.to_string(), available }
    }
}

struct WrapperParams {
    frame_stack: usize,
    max_episode_steps: Option<usize>,
    sensor_dropout: Option<(DropoutMode, bool)>,
}

impl WrapperParams {
    fn parse(env: &str, params: &toml::Table, defaults: EnvDefaults) -> Result<Self, EnvError> {
        let invalid = |param: &str, reason: String| EnvError::InvalidParam {
            env: env.to_string(),
            param: param.to_string(),
            reason,
        };
        let count = |key: &str| -> Result<Option<usize>, EnvError> {
            match params.get(key) {
                None => Ok(None),
                Some(toml::Value::Integer(v)) if *v >= 0 => Ok(Some(*v as usize)),
                Some(v) => Err(invalid(key, format!("expected a non-negative integer, got {v}"))),
            }
        };
        let frame_stack = count("frame_stack")?.unwrap_or(defaults.frame_stack);
        if frame_stack == 0 {
            return Err(invalid("frame_stack", "must be at least 1".into()));
        }
        let max_episode_steps = match count("max_episode_steps")? {
            None => defaults.max_episode_steps,
            Some(0) => None,
            Some(n) => Some(n),
        };
        let sensor_dropout = match params.get("sensor_dropout") {
            None => None,
            Some(v) => {
                // `keep_data` belongs to the wrapper, not to the mode: taken out before the mode
                // (which rejects unknown keys) is read.
                let mut v = v.clone();
                let keep_data = match v.as_table_mut().and_then(|t| t.remove("keep_data")) {
                    None => false,
                    Some(toml::Value::Boolean(keep)) => keep,
                    Some(other) => {
                        return Err(invalid("sensor_dropout.keep_data", format!("expected true or false, got {other}")))
                    }
                };
                let mode =
                    v.try_into::<DropoutMode>().map_err(|e| invalid("sensor_dropout", e.message().to_string()))?;
                Some((mode, keep_data))
            }
        };
        Ok(Self { frame_stack, max_episode_steps, sensor_dropout })
    }

    fn apply(self, env: Box<dyn Env>) -> Result<Box<dyn Env>, EnvError> {
        let mut env: Box<dyn Env> =
            if self.frame_stack > 1 { Box::new(FrameStack::new(env, self.frame_stack)?) } else { env };
        if let Some(steps) = self.max_episode_steps {
            env = Box::new(TimeLimit::new(env, steps)?);
        }
        if let Some((mode, keep_data)) = self.sensor_dropout {
            env = Box::new(SensorDropout::new(env, mode)?.keeping_data(keep_data));
        }
        Ok(Box::new(EpisodeStatistics::new(env)))
    }
}

/// Turns a deserialisation error into an error naming the parameter it points at (`text` is
/// the parameters as TOML).
pub(crate) fn param_error(env: &str, text: &str, error: &toml::de::Error) -> EnvError {
    let param = error.span().and_then(|span| toml_key_at(text, span.start)).unwrap_or_else(|| "(parameters)".into());
    EnvError::InvalidParam { env: env.to_string(), param, reason: error.message().to_string() }
}

/// The dotted path of the key on the line of `text` that holds byte `offset`, for TOML written
/// by `toml::to_string` (one key per line under `[section]` headers): turns the span of a
/// deserialisation error into the name of the key it is about.
pub fn toml_key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim();
    if line.starts_with('[') {
        return Some(line.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    }
    let key = line.split('=').next()?.trim();
    let section = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
    Some(match section {
        Some(header) => format!("{}.{key}", header.trim_matches(|c| c == '[' || c == ']').trim()),
        None => key.to_string(),
    })
}
