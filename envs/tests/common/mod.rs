//! Small environments shared by the integration tests.
#![allow(dead_code)]

use m3ixup_envs::{
    validate_action, Action, ActionSpace, DType, Env, EnvError, EnvState, Info, ModalityData, ModalitySpec, Obs,
    ObsSpace, Step,
};

/// Emits its step counter t: an image modality filled with t and a vector (t, -t).
/// Reward = the action; terminates after `terminate_at` steps when set.
pub struct Counter {
    obs_space: ObsSpace,
    action_space: ActionSpace,
    t: u32,
    terminate_at: Option<u32>,
}

impl Counter {
    pub fn new(terminate_at: Option<u32>) -> Self {
        Self::with_vec_bounds(terminate_at, -1e6, 1e6)
    }

    /// With `vec`'s bounds `[low, high]` (infinite ones included, as Gymnasium's Box allows).
    pub fn with_vec_bounds(terminate_at: Option<u32>, low: f32, high: f32) -> Self {
        let obs_space = ObsSpace::new([
            ("image", ModalitySpec::uniform(&[1, 2, 2], DType::U8, 0.0, 255.0)),
            ("vec", ModalitySpec::uniform(&[2], DType::F32, low, high)),
        ])
        .unwrap();
        Self { obs_space, action_space: ActionSpace::Box { low: vec![-1.0], high: vec![1.0] }, t: 0, terminate_at }
    }

    pub fn obs(&self) -> Obs {
        Obs::new(vec![
            ModalityData::U8(vec![self.t as u8; 4]),
            ModalityData::F32(vec![self.t as f32, -(self.t as f32)]),
        ])
    }
}

impl Env for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn observation_space(&self) -> &ObsSpace {
        &self.obs_space
    }
    fn action_space(&self) -> &ActionSpace {
        &self.action_space
    }
    fn reset(&mut self, _seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        self.t = 0;
        Ok((self.obs(), Info::new()))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        validate_action(self.name(), &self.action_space, action)?;
        let Action::Continuous(a) = action else { unreachable!("validated") };
        self.t += 1;
        let terminated = self.terminate_at == Some(self.t);
        Ok(Step { obs: self.obs(), reward: a[0] as f64, terminated, truncated: false, info: Info::new() })
    }
}

/// Parameters of [`Counter`] when it is registered by name.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CounterConfig {
    pub terminate_at: Option<u32>,
}

/// A way for an environment to break the contract.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flaw {
    /// Draws from a process-wide counter, so a seed does not fix the episode.
    Nondeterministic,
    /// Accepts any action, NaN included.
    AcceptsAnything,
    /// Panics on a bad action instead of rejecting it.
    PanicsOnBadAction,
    /// Emits a vector value outside its declared bounds after a few steps.
    LeavesBounds,
    /// Marks a modality missing without clearing it.
    MissingButNotCleared,
    /// Saves its state but restores only part of it (the step counter, not the steps left).
    RestoresPartOfItsState,
}

/// A [`Counter`] with one [`Flaw`].
pub struct Flawed {
    pub inner: Counter,
    pub flaw: Flaw,
}

static GLOBAL_DRAWS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Env for Flawed {
    fn name(&self) -> &str {
        "flawed"
    }
    fn observation_space(&self) -> &ObsSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        self.inner.reset(seed)
    }
    fn save_state(&self) -> Option<EnvState> {
        (self.flaw == Flaw::RestoresPartOfItsState).then(|| EnvState::new("flawed", &self.inner.t, None))
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        // The flaw: the counter comes back, but the draws it made since are not undone.
        self.inner.t = state.fields("flawed")?;
        GLOBAL_DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = match (self.flaw, action) {
            (Flaw::AcceptsAnything, _) => {
                self.inner.t += 1;
                Step { obs: self.inner.obs(), reward: 0.0, terminated: false, truncated: false, info: Info::new() }
            }
            (Flaw::PanicsOnBadAction, Action::Continuous(a)) if a.len() != 1 => panic!("index out of bounds"),
            _ => self.inner.step(action)?,
        };
        match self.flaw {
            Flaw::Nondeterministic => {
                step.reward = GLOBAL_DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f64;
            }
            Flaw::LeavesBounds if self.inner.t > 3 => {
                if let ModalityData::F32(v) = &mut step.obs.data[1] {
                    v[0] = 2e6;
                }
            }
            Flaw::MissingButNotCleared => step.obs.present[0] = false,
            Flaw::RestoresPartOfItsState => {
                // A hidden stream the saved state leaves out.
                step.reward = (GLOBAL_DRAWS.load(std::sync::atomic::Ordering::Relaxed) % 7) as f64;
            }
            _ => {}
        }
        Ok(step)
    }
}
