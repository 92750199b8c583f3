use std::collections::BTreeMap;

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
    PerEpisode { p: DropProbability },
    /// At every step (and reset) each of `modalities` (every modality when empty) is dropped
    /// independently with probability `p`; an observation may then have no modality at all.
    PerStep {
        p: DropProbability,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        modalities: Vec<String>,
    },
}

/// How likely a [`DropoutMode`] drops each modality: `p = 0.5` (every modality alike) or
/// `p = { pixels = 0.6, sound = 0.4 }` (per modality; a modality not named is never dropped),
/// e.g. to train more often on the weaker sensor alone.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    untagged,
    expecting = "a probability (e.g. p = 0.5) or a table of probabilities per modality (e.g. p = { pixels = 0.6, sound = 0.4 })"
)]
pub enum DropProbability {
    Every(f64),
    PerModality(BTreeMap<String, f64>),
}

impl From<f64> for DropProbability {
    fn from(p: f64) -> Self {
        Self::Every(p)
    }
}

/// Removes modalities from observations: their data is cleared to zeros and their presence flag
/// set to `false`; shapes never change, so networks and batch buffers are unaffected.
///
/// [`SensorDropout::keeping_data`] (parameter `keep_data = true`) clears the flag only: the
/// agent acts as without the sensor (encoders read the flag and ignore a missing modality's
/// data), and a learner may use the data it did not act on as a training-time teacher signal
/// (PPO's `consistency_rows = "all"`). Evaluation always clears.
///
/// The wrapper has its own random stream, reseeded from the reset seed, so a seeded episode
/// drops the same modalities every time.
pub struct SensorDropout<E> {
    inner: E,
    mode: DropoutMode,
    /// (modality index, probability of dropping it), in the order of the draws: for `Fixed` the
    /// dropped modalities (probability 1), for `PerStep` those it may drop, for `PerEpisode`
    /// every modality.
    drawn: Vec<(usize, f64)>,
    /// For `PerEpisode`: which modalities are dropped in the current episode.
    episode_mask: Vec<bool>,
    rng: EnvRng,
    /// Mark dropped modalities missing without clearing their data.
    keep_data: bool,
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
        // The order of `drawn` is the order of the random draws, part of a seed's trajectory.
        let drawn = match &mode {
            DropoutMode::Fixed { modalities } => {
                modalities.iter().map(|m| Ok((space.require(m)?, 1.0))).collect::<Result<Vec<_>, EnvError>>()?
            }
            DropoutMode::PerEpisode { p } | DropoutMode::PerStep { p, .. } => {
                let p_table = matches!(p, DropProbability::PerModality(_));
                let named = match (&mode, p) {
                    (DropoutMode::PerStep { modalities, .. }, DropProbability::PerModality(_))
                        if !modalities.is_empty() =>
                    {
                        return Err(invalid(
                            "name the modalities either in `p` (a table per modality) or in `modalities`, not both"
                                .into(),
                        ));
                    }
                    // Per-step: the modalities it may drop (all when none are named).
                    (DropoutMode::PerStep { modalities, .. }, DropProbability::Every(p)) if !modalities.is_empty() => {
                        modalities.iter().map(|m| Ok((space.require(m)?, *p))).collect::<Result<Vec<_>, EnvError>>()?
                    }
                    // Every modality (per-episode always: its redraw rule looks at them all).
                    (_, DropProbability::Every(p)) => (0..space.len()).map(|i| (i, *p)).collect(),
                    (_, DropProbability::PerModality(by_name)) => {
                        let mut probs = vec![0.0; space.len()];
                        for (m, p) in by_name {
                            probs[space.require(m)?] = *p;
                        }
                        probs.into_iter().enumerate().collect()
                    }
                };
                if let Some((i, p)) = named.iter().find(|(_, p)| !(0.0..=1.0).contains(p)) {
                    let which = match p_table {
                        true => format!(" for `{}`", space.names().nth(*i).unwrap_or_default()),
                        false => String::new(),
                    };
                    return Err(invalid(format!("probability p = {p}{which} is outside [0, 1]")));
                }
                if matches!(mode, DropoutMode::PerEpisode { .. }) && named.iter().all(|&(_, p)| p >= 1.0) {
                    return Err(invalid(
                        "per-episode dropout keeps at least one modality, so p must be below 1 (for one modality at least)"
                            .into(),
                    ));
                }
                named
            }
        };
        let episode_mask = vec![false; space.len()];
        Ok(Self { inner, mode, drawn, episode_mask, rng: EnvRng::seed_from_u64(DROPOUT_SEED_SALT), keep_data: false })
    }

    /// With `keep`, dropped modalities are marked missing and keep their data (see the type's
    /// docs); the same modalities are dropped either way.
    pub fn keeping_data(mut self, keep: bool) -> Self {
        self.keep_data = keep;
        self
    }

    fn apply(&mut self, obs: &mut Obs) {
        let remove = |obs: &mut Obs, i| if self.keep_data { obs.withhold_modality(i) } else { obs.drop_modality(i) };
        match &self.mode {
            DropoutMode::Fixed { .. } => {
                for &(i, _) in &self.drawn {
                    remove(obs, i);
                }
            }
            DropoutMode::PerEpisode { .. } => {
                for (i, &dropped) in self.episode_mask.iter().enumerate() {
                    if dropped {
                        remove(obs, i);
                    }
                }
            }
            DropoutMode::PerStep { .. } => {
                for &(i, p) in &self.drawn {
                    if self.rng.gen_bool(p) {
                        remove(obs, i);
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
        if let DropoutMode::PerEpisode { .. } = self.mode {
            let n = self.episode_mask.len();
            loop {
                for &(i, p) in &self.drawn {
                    self.episode_mask[i] = self.rng.gen_bool(p);
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
