//! The environment contract: Gymnasium semantics over named modalities.

use std::collections::BTreeMap;

use crate::error::EnvError;
use crate::spaces::{Action, ActionSpace, DType, ObsSpace};
use crate::state::EnvState;

/// The data of one modality in one observation, flat in row-major order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ModalityData {
    /// Bytes, not a sequence of numbers, in binary formats (MessagePack: one byte per value).
    U8(#[serde(with = "serde_bytes")] Vec<u8>),
    F32(Vec<f32>),
}

impl ModalityData {
    /// A zero-filled buffer of `numel` elements of `dtype`.
    pub fn zeros(dtype: DType, numel: usize) -> Self {
        match dtype {
            DType::U8 => ModalityData::U8(vec![0; numel]),
            DType::F32 => ModalityData::F32(vec![0.0; numel]),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            ModalityData::U8(_) => DType::U8,
            ModalityData::F32(_) => DType::F32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ModalityData::U8(v) => v.len(),
            ModalityData::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets every element to zero (sensor dropout clears data this way; shapes never change).
    pub fn clear(&mut self) {
        match self {
            ModalityData::U8(v) => v.fill(0),
            ModalityData::F32(v) => v.fill(0.0),
        }
    }

    /// Element `i` as `f32`, whatever the dtype.
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            ModalityData::U8(v) => v[i] as f32,
            ModalityData::F32(v) => v[i],
        }
    }

    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            ModalityData::U8(v) => Some(v),
            ModalityData::F32(_) => None,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            ModalityData::F32(v) => Some(v),
            ModalityData::U8(_) => None,
        }
    }
}

/// One observation: the data of every modality in the space's order, and whether each modality
/// is present. A missing modality (sensor dropout) keeps its shape, holds zeros and has
/// `present[i] == false`; encoders read the mask. A training wrapper may keep a missing
/// modality's data for the learner ([`Obs::withhold_modality`]); an agent never reads it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Obs {
    pub data: Vec<ModalityData>,
    pub present: Vec<bool>,
}

impl Obs {
    /// All modalities present.
    pub fn new(data: Vec<ModalityData>) -> Self {
        let present = vec![true; data.len()];
        Self { data, present }
    }

    /// A zero observation of `space` with every modality present.
    pub fn zeros(space: &ObsSpace) -> Self {
        Self::new(space.iter().map(|(_, s)| ModalityData::zeros(s.dtype, s.numel())).collect())
    }

    /// Clears modality `index` and marks it missing.
    pub fn drop_modality(&mut self, index: usize) {
        self.data[index].clear();
        self.present[index] = false;
    }

    /// Marks modality `index` missing but keeps its data: the agent acts without it, while a
    /// learner that knows the data was kept may use it as a training signal (sensor dropout's
    /// `keep_data`).
    pub fn withhold_modality(&mut self, index: usize) {
        self.present[index] = false;
    }

    /// Checks that this observation matches `space`: modality count, dtype, length, bounds.
    pub fn check(&self, space: &ObsSpace) -> Result<(), String> {
        if self.data.len() != space.len() || self.present.len() != space.len() {
            return Err(format!(
                "observation has {} modalities and {} presence flags, the space declares {}",
                self.data.len(),
                self.present.len(),
                space.len()
            ));
        }
        for (i, (name, spec)) in space.iter().enumerate() {
            let d = &self.data[i];
            if d.dtype() != spec.dtype {
                return Err(format!("modality `{name}` holds {} data, the space declares {}", d.dtype(), spec.dtype));
            }
            if d.len() != spec.numel() {
                return Err(format!(
                    "modality `{name}` holds {} values, the space declares shape {:?} ({} values)",
                    d.len(),
                    spec.shape,
                    spec.numel()
                ));
            }
            for j in 0..d.len() {
                let v = d.get_f32(j);
                if !(v >= spec.low[j] && v <= spec.high[j]) {
                    return Err(format!(
                        "modality `{name}` element {j} is {v}, outside its bounds [{}, {}]",
                        spec.low[j], spec.high[j]
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Extra per-step facts, by name (for example `episode/return` at the end of an episode).
pub type Info = BTreeMap<String, f64>;

/// Keys the episode-statistics wrapper writes into the info of an episode's last step.
pub const INFO_EPISODE_RETURN: &str = "episode/return";
pub const INFO_EPISODE_LENGTH: &str = "episode/length";

/// The result of one step, with Gymnasium's meaning of the two flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub obs: Obs,
    pub reward: f64,
    /// The MDP ended (a terminal state): the learner does not bootstrap.
    pub terminated: bool,
    /// The episode was cut (a time limit): the learner bootstraps from `obs`.
    pub truncated: bool,
    pub info: Info,
}

impl Step {
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A reinforcement-learning environment that observes several named modalities.
///
/// Contract (checked by [`check_env`](crate::check_env)):
/// - `reset(Some(seed))` starts the same episode, bit for bit, every time; `reset(None)` continues
///   the environment's own random stream.
/// - every observation matches `observation_space()`;
/// - `step` rejects an action that does not fit `action_space()` with
///   [`EnvError::InvalidAction`] and never panics on it;
/// - `terminated` means the MDP ended, `truncated` that a limit cut the episode. After either,
///   the caller resets.
///
/// `Send` so that vector environments can move environments into worker threads.
pub trait Env: Send {
    /// The registered name, used in error messages.
    fn name(&self) -> &str;
    fn observation_space(&self) -> &ObsSpace;
    fn action_space(&self) -> &ActionSpace;
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError>;
    fn step(&mut self, action: &Action) -> Result<Step, EnvError>;

    /// Everything that decides this environment's future (its physics, its random stream, a
    /// wrapper's counters), for a run that stops and later continues exactly where it stopped.
    /// `None` (the default): it cannot save its state, and a continued run starts new episodes.
    fn save_state(&self) -> Option<EnvState> {
        None
    }

    /// Puts the environment back into a state that [`Env::save_state`] returned for the same
    /// environment (and wrappers) built with the same parameters; `step` may follow directly.
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        Err(EnvError::State {
            env: self.name().to_string(),
            reason: format!("it cannot restore states (saved by `{}`)", state.kind),
        })
    }
}

impl<E: Env + ?Sized> Env for Box<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn observation_space(&self) -> &ObsSpace {
        (**self).observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        (**self).action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        (**self).reset(seed)
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        (**self).step(action)
    }
    fn save_state(&self) -> Option<EnvState> {
        (**self).save_state()
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        (**self).restore_state(state)
    }
}

/// Rejects `action` with an error naming the environment when it does not fit `space`.
/// Every environment calls this first in `step`.
pub fn validate_action(env: &str, space: &ActionSpace, action: &Action) -> Result<(), EnvError> {
    space.check(action).map_err(|reason| EnvError::InvalidAction { env: env.to_string(), reason })
}
