use crate::state::{save_wrapper, EnvRng, EnvState};
use rand::{Rng, SeedableRng};

use crate::{Action, ActionSpace, Env, EnvError, Info, Obs, ObsSpace, Step};

/// Which modalities a [`SensorDropout`] removes, and when.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DropoutMode {
    /// These modalities are always missing.
    Fixed { modalities: Vec<String> },
    /// At every reset each modality is dropped for the whole episode with probability `p`,
    /// redrawn while every modality would be missing (an agent needs at least one sensor).
    PerEpisode { p: f64 },
    /// At every step (and reset) each of `modalities` (every modality when empty) is dropped
    /// independently with probability `p`; an observation may then have no modality at all.
    PerStep {
        p: f64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        modalities: Vec<String>,
    },
}

/// Removes modalities from observations: their data is cleared to zeros and their presence flag
/// set to `false`; shapes never change, so networks and batch buffers are unaffected.
///
/// The wrapper has its own random stream, reseeded from the reset seed, so a seeded episode
/// drops the same modalities every time.
pub struct SensorDropout<E> {
    inner: E,
    mode: DropoutMode,
    /// For `Fixed`: the indices of the dropped modalities; for `PerStep`: those it may drop.
    fixed: Vec<usize>,
    /// For `PerEpisode`: which modalities are dropped in the current episode.
    episode_mask: Vec<bool>,
    rng: EnvRng,
}

/// Mixed into the reset seed so the dropout stream differs from the environment's own.
const DROPOUT_SEED_SALT: u64 = 0x5e45_0d50_0a11_d0e5;

impl<E: Env> SensorDropout<E> {
    pub fn new(inner: E, mode: DropoutMode) -> Result<Self, EnvError> {
        let space = inner.observation_space();
        let invalid = |reason: String| EnvError::InvalidParam {
            env: inner.name().to_string(),
            param: "sensor_dropout".into(),
            reason,
        };
        let fixed = match &mode {
            DropoutMode::Fixed { modalities } => {
                modalities.iter().map(|m| space.require(m)).collect::<Result<Vec<_>, _>>()?
            }
            DropoutMode::PerEpisode { p } | DropoutMode::PerStep { p, .. } => {
                if !(0.0..=1.0).contains(p) {
                    return Err(invalid(format!("probability p = {p} is outside [0, 1]")));
                }
                if matches!(mode, DropoutMode::PerEpisode { .. }) && *p >= 1.0 {
                    return Err(invalid(
                        "per-episode dropout keeps at least one modality, so p must be below 1".into(),
                    ));
                }
                match &mode {
                    // Per-step: the modalities it may drop (all when none are named).
                    DropoutMode::PerStep { modalities, .. } if !modalities.is_empty() => {
                        modalities.iter().map(|m| space.require(m)).collect::<Result<Vec<_>, _>>()?
                    }
                    DropoutMode::PerStep { .. } => (0..space.len()).collect(),
                    _ => Vec::new(),
                }
            }
        };
        let episode_mask = vec![false; space.len()];
        Ok(Self { inner, mode, fixed, episode_mask, rng: EnvRng::seed_from_u64(DROPOUT_SEED_SALT) })
    }

    fn apply(&mut self, obs: &mut Obs) {
        match &self.mode {
            DropoutMode::Fixed { .. } => {
                for &i in &self.fixed {
                    obs.drop_modality(i);
                }
            }
            DropoutMode::PerEpisode { .. } => {
                for (i, &dropped) in self.episode_mask.iter().enumerate() {
                    if dropped {
                        obs.drop_modality(i);
                    }
                }
            }
            DropoutMode::PerStep { p, .. } => {
                for &i in &self.fixed {
                    if self.rng.gen_bool(*p) {
                        obs.drop_modality(i);
                    }
                }
            }
        }
    }
}

impl<E: Env> Env for SensorDropout<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("SensorDropout", &(&self.episode_mask, &self.rng), &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("SensorDropout")?)?;
        (self.episode_mask, self.rng) = state.fields("SensorDropout")?;
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
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed ^ DROPOUT_SEED_SALT);
        }
        if let DropoutMode::PerEpisode { p } = self.mode {
            let n = self.episode_mask.len();
            loop {
                for dropped in self.episode_mask.iter_mut() {
                    *dropped = self.rng.gen_bool(p);
                }
                if n == 1 || self.episode_mask.iter().any(|d| !d) {
                    break;
                }
            }
            if n == 1 {
                // A single-modality environment cannot lose its only sensor for a whole episode.
                self.episode_mask[0] = false;
            }
        }
        let (mut obs, info) = self.inner.reset(seed)?;
        self.apply(&mut obs);
        Ok((obs, info))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        self.apply(&mut step.obs);
        Ok(step)
    }
}
