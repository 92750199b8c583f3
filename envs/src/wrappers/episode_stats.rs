use crate::state::{save_wrapper, EnvState};
use crate::{Action, ActionSpace, Env, EnvError, Info, Obs, ObsSpace, Step, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN};

/// Adds the episode's return and length to the info of its last step (under
/// [`INFO_EPISODE_RETURN`] and [`INFO_EPISODE_LENGTH`]), as Gymnasium's `RecordEpisodeStatistics`.
pub struct EpisodeStatistics<E> {
    inner: E,
    episode_return: f64,
    episode_length: usize,
}

impl<E: Env> EpisodeStatistics<E> {
    pub fn new(inner: E) -> Self {
        Self { inner, episode_return: 0.0, episode_length: 0 }
    }
}

impl<E: Env> Env for EpisodeStatistics<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("EpisodeStatistics", &(self.episode_return, self.episode_length), &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("EpisodeStatistics")?)?;
        (self.episode_return, self.episode_length) = state.fields("EpisodeStatistics")?;
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
        self.episode_return = 0.0;
        self.episode_length = 0;
        self.inner.reset(seed)
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        self.episode_return += step.reward;
        self.episode_length += 1;
        if step.done() {
            step.info.insert(INFO_EPISODE_RETURN.into(), self.episode_return);
            step.info.insert(INFO_EPISODE_LENGTH.into(), self.episode_length as f64);
        }
        Ok(step)
    }
}
