use crate::state::{save_wrapper, EnvState};
use crate::{Action, ActionSpace, Env, EnvError, Info, Obs, ObsSpace, Step};

/// Truncates episodes after `max_steps` steps (Gymnasium's `TimeLimit`): the last step has
/// `truncated = true`, so the learner bootstraps from its observation. A step that both
/// terminates and hits the limit reports both flags.
pub struct TimeLimit<E> {
    inner: E,
    max_steps: usize,
    elapsed: usize,
}

impl<E: Env> TimeLimit<E> {
    pub fn new(inner: E, max_steps: usize) -> Result<Self, EnvError> {
        if max_steps == 0 {
            return Err(EnvError::InvalidParam {
                env: inner.name().to_string(),
                param: "max_episode_steps".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self { inner, max_steps, elapsed: 0 })
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Env> Env for TimeLimit<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("TimeLimit", &self.elapsed, &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("TimeLimit")?)?;
        self.elapsed = state.fields("TimeLimit")?;
        Ok(())
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn observation_space(&self) -> &ObsSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        self.elapsed = 0;
        self.inner.reset(seed)
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        self.elapsed += 1;
        if self.elapsed >= self.max_steps {
            step.truncated = true;
        }
        Ok(step)
    }
}
