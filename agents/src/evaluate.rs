//! Sensor-failure robustness evaluation (docs/M3IXUP.md section 4): agents trained once with every
//! sensor are run, without learning, under a matrix of conditions: every sensor, one sensor
//! alone, one sensor removed, one sensor dropped per step with probability p, Gaussian noise on
//! one sensor, one sensor frozen.
//!
//! **Score.** An episode's score is its return by default ([`Score::Return`]): on tasks that pay
//! a constant reward per step until a failure ends the episode (CartPole), the mean reward per
//! step is the same for every policy and only the return tells them apart. [`Score::PerStep`]
//! (return / length) is the figure of the M3ixup paper's tables; it is meant for episodes of a
//! fixed length, where it is the return divided by a constant and gives the same retentions.
//!
//! **Noise** is relative to each value's range; on a modality with an infinite bound (a
//! Gymnasium Box of velocities, say) it is relative to the value's spread (max - min) over the
//! random policy's episodes of the same evaluation, and the report says so.
//!
//! **Comparability.** Episode `k` of every agent and every condition starts from the seed
//! `seed + k` (rounds of `num_envs` episodes, each round reset with its seeds), so rows differ by
//! the agent and the condition only. The uniform random policy is measured in the same run with
//! every sensor; the retention ratio of a row is `(score - random) / (full - random)`, where
//! `full` is the same agent's score with every sensor: 1 = no loss, 0 = no better than random.
//!
//! **References** ([`evaluate_with_references`]). Beside the retention, a row can be compared
//! with another run: the `<modality> only` rows with **specialists**, runs trained on that
//! sensor alone, and the `all` rows with a full-sensor reference. A specialist runs the same
//! episodes (same environment, parameters, seeds, steps and score) under the `<modality> only`
//! condition, seeing only its own sensor; its checkpoint must observe exactly that modality
//! with the same spec. The fraction is `(score - random) / (reference - random)`
//! ([`reference_fraction`]), where `reference` is the mean score of the reference runs.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use m3ixup_envs::wrappers::{DropoutMode, SensorDropout, SensorNoise, StaleSensor};
use m3ixup_envs::{
    make, ActionSpace, BatchActions, BatchObs, Env, EnvError, ModalityData, ObsSpace, VecEnv, VecEnvConfig,
};

use crate::algorithms::actor_critic::{choose_actions, ActorCritic};
use crate::algorithms::ddpg::DdpgAgent;
use crate::algorithms::off_policy::to_env_actions;
use crate::algorithms::sac::SacAgent;
use crate::representation::storage::batch_input;

/// A trained controller, whatever the algorithm that trained it: actions for a batch of
/// observations.
pub trait Policy<B: Backend> {
    /// The environments' actions for `obs` (one row per sub-environment): the policy's mode
    /// when `deterministic`, otherwise a draw from `rng`.
    fn act(
        &self,
        space: &ObsSpace,
        action_space: &ActionSpace,
        obs: &BatchObs,
        deterministic: bool,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> BatchActions;
}

impl<B: Backend> Policy<B> for ActorCritic<B> {
    fn act(
        &self,
        space: &ObsSpace,
        action_space: &ActionSpace,
        obs: &BatchObs,
        deterministic: bool,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> BatchActions {
        let (x, presence) = batch_input::<B>(space, obs, device);
        let policy: Vec<f32> =
            self.forward(&x, &presence).policy.into_data().convert::<f32>().to_vec().expect("f32 policy");
        choose_actions(action_space, &policy, &self.log_std_values(), deterministic, rng).env
    }
}

impl<B: Backend> Policy<B> for SacAgent<B> {
    fn act(
        &self,
        space: &ObsSpace,
        action_space: &ActionSpace,
        obs: &BatchObs,
        deterministic: bool,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> BatchActions {
        to_env_actions(action_space, &crate::algorithms::sac::act(self, space, obs, deterministic, rng, device))
    }
}

/// DDPG's actor is deterministic: `deterministic` and `rng` do not apply.
impl<B: Backend> Policy<B> for DdpgAgent<B> {
    fn act(
        &self,
        space: &ObsSpace,
        action_space: &ActionSpace,
        obs: &BatchObs,
        _: bool,
        _: &mut StdRng,
        device: &B::Device,
    ) -> BatchActions {
        to_env_actions(action_space, &DdpgAgent::act(self, space, obs, device))
    }
}

/// A policy trained on some of the environment's modalities, acting on observations of all of
/// them: it is shown its own modalities only (`keep`, indices into the environment's space, in
/// the order of its own `space`).
struct Projected<'a, B: Backend> {
    inner: &'a dyn Policy<B>,
    keep: Vec<usize>,
    space: ObsSpace,
}

impl<B: Backend> Policy<B> for Projected<'_, B> {
    fn act(
        &self,
        _: &ObsSpace,
        action_space: &ActionSpace,
        obs: &BatchObs,
        deterministic: bool,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> BatchActions {
        let (n, m) = (obs.num_envs(), obs.num_modalities());
        let own = BatchObs {
            buffers: self.keep.iter().map(|&k| obs.buffers[k].clone()).collect(),
            present: (0..n).flat_map(|i| self.keep.iter().map(move |&k| obs.present[i * m + k])).collect(),
        };
        self.inner.act(&self.space, action_space, &own, deterministic, rng, device)
    }
}

/// Errors of an evaluation, raised before any episode runs when the inputs are wrong.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A bad condition or protocol value, or an agent that does not fit the environment.
    #[error("evaluation: {0}")]
    Invalid(String),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// One way the sensors can fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Condition {
    /// Every sensor works.
    All,
    /// Only this modality is present; every other one is removed (masked).
    Only { modality: String },
    /// This modality is removed (masked); the others work.
    Without { modality: String },
    /// This modality is removed at each step with probability `p`.
    PerStep { modality: String, p: f64 },
    /// Gaussian noise of `sigma` x the value range on this modality, still marked present.
    Noise { modality: String, sigma: f64 },
    /// This modality shows the episode's first observation forever, still marked present.
    Frozen { modality: String },
}

impl Condition {
    /// A short label for tables: `all`, `pixels only`, `no sound`, `pixels p=0.3`,
    /// `sound noise 0.1`, `pixels frozen`.
    pub fn label(&self) -> String {
        match self {
            Condition::All => "all".into(),
            Condition::Only { modality } => format!("{modality} only"),
            Condition::Without { modality } => format!("no {modality}"),
            Condition::PerStep { modality, p } => format!("{modality} p={p}"),
            Condition::Noise { modality, sigma } => format!("{modality} noise {sigma}"),
            Condition::Frozen { modality } => format!("{modality} frozen"),
        }
    }

    /// Checks the condition against a space: known modalities, p in [0, 1], sigma >= 0.
    pub fn validate(&self, space: &ObsSpace) -> Result<(), EvalError> {
        let known = |m: &str| {
            space.require(m).map(|_| ()).map_err(|_| {
                EvalError::Env(EnvError::UnknownModality {
                    name: m.to_string(),
                    available: space.names().map(String::from).collect(),
                })
            })
        };
        match self {
            Condition::All => Ok(()),
            Condition::Only { modality } | Condition::Without { modality } | Condition::Frozen { modality } => {
                known(modality)
            }
            Condition::PerStep { modality, p } => {
                known(modality)?;
                if (0.0..=1.0).contains(p) {
                    Ok(())
                } else {
                    Err(EvalError::Invalid(format!("condition `{}`: p = {p} is outside [0, 1]", self.label())))
                }
            }
            Condition::Noise { modality, sigma } => {
                known(modality)?;
                if sigma.is_finite() && *sigma >= 0.0 {
                    Ok(())
                } else {
                    Err(EvalError::Invalid(format!("condition `{}`: sigma = {sigma} must be >= 0", self.label())))
                }
            }
        }
    }

    /// The environment with this condition applied (noise relative to the value ranges: a
    /// modality with an infinite bound is refused; see [`Condition::wrap_scaled`]).
    pub fn wrap(&self, env: Box<dyn Env>) -> Result<Box<dyn Env>, EnvError> {
        self.wrap_scaled(env, &NoiseScales::new())
    }

    /// As [`Condition::wrap`], with noise relative to `scales[modality]` where it is given.
    pub fn wrap_scaled(&self, env: Box<dyn Env>, scales: &NoiseScales) -> Result<Box<dyn Env>, EnvError> {
        let space = env.observation_space().clone();
        Ok(match self {
            Condition::All => env,
            Condition::Only { modality } => {
                space.require(modality)?;
                let others = space.names().filter(|n| n != modality).map(String::from).collect();
                Box::new(SensorDropout::new(env, DropoutMode::Fixed { modalities: others })?)
            }
            Condition::Without { modality } => {
                Box::new(SensorDropout::new(env, DropoutMode::Fixed { modalities: vec![modality.clone()] })?)
            }
            Condition::PerStep { modality, p } => Box::new(SensorDropout::new(
                env,
                DropoutMode::PerStep { p: (*p).into(), modalities: vec![modality.clone()] },
            )?),
            Condition::Noise { modality, sigma } => match scales.get(modality) {
                Some(scale) => Box::new(SensorNoise::with_scale(env, modality, *sigma, scale.clone())?),
                None => Box::new(SensorNoise::new(env, modality, *sigma)?),
            },
            Condition::Frozen { modality } => Box::new(StaleSensor::new(env, modality)?),
        })
    }
}

/// Per modality, per element: what noise is relative to, where the value range is infinite.
pub type NoiseScales = BTreeMap<String, Vec<f64>>;

/// What one episode scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Score {
    /// The sum of the episode's rewards.
    #[default]
    Return,
    /// Return / length (for episodes of a fixed length).
    PerStep,
}

impl Score {
    /// As in configs and on the command line: `return`, `per-step`.
    pub fn key(self) -> &'static str {
        match self {
            Score::Return => "return",
            Score::PerStep => "per-step",
        }
    }

    /// For tables: "episode return", "mean per-step reward".
    pub fn describe(self) -> &'static str {
        match self {
            Score::Return => "episode return",
            Score::PerStep => "mean per-step reward",
        }
    }
}

impl std::str::FromStr for Score {
    type Err = String;

    /// `return` or `per-step` (the command line's `--score`, Python's `score=`).
    fn from_str(text: &str) -> Result<Self, String> {
        [Score::Return, Score::PerStep]
            .into_iter()
            .find(|s| s.key() == text)
            .ok_or_else(|| format!("`{text}` is not a score: expected `return` or `per-step`"))
    }
}

/// The evaluation protocol. Defaults: the paper's (100 episodes x 300 steps, deterministic
/// policy), seeds from 1 000 000 on (training runs seed their environments with small seeds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub episodes: usize,
    /// Steps per episode (the episode limit is set to this; environments that terminate earlier
    /// end their episode there).
    pub steps: usize,
    /// Episode k starts from seed `seed + k`.
    pub seed: u64,
    /// Episodes run side by side.
    pub num_envs: usize,
    /// Threads stepping them, the calling thread included.
    pub workers: usize,
    /// Take the policy's mode (mean action) rather than sampling.
    pub deterministic: bool,
    /// What an episode scores, and what the retention is computed on.
    pub score: Score,
    /// Per-step dropout probabilities, each applied to each modality.
    pub dropout_p: Vec<f64>,
    /// Noise levels (relative to the value range), each applied to each modality.
    pub noise_sigma: Vec<f64>,
    /// Add a frozen-sensor condition per modality.
    pub frozen: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            episodes: 100,
            steps: 300,
            seed: 1_000_000,
            num_envs: 25,
            workers: 1,
            deterministic: true,
            score: Score::Return,
            dropout_p: vec![0.1, 0.3, 0.5],
            noise_sigma: vec![0.1],
            frozen: true,
        }
    }
}

impl EvalConfig {
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |field: &str, reason: String| Err(EvalError::Invalid(format!("evaluation `{field}`: {reason}")));
        if self.episodes == 0 {
            return bad("episodes", "must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.num_envs == 0 {
            return bad("num_envs", "must be at least 1".into());
        }
        if let Some(p) = self.dropout_p.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return bad("dropout_p", format!("p = {p} is outside [0, 1]"));
        }
        if let Some(s) = self.noise_sigma.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return bad("noise_sigma", format!("sigma = {s} must be >= 0"));
        }
        Ok(())
    }

    /// The conditions for `space`: all; each modality alone; each removed (only with three or
    /// more modalities: with two, removing one is the other alone); per-step dropout, noise and
    /// freezing of each modality.
    pub fn conditions(&self, space: &ObsSpace) -> Vec<Condition> {
        let names: Vec<String> = space.names().map(String::from).collect();
        let mut out = vec![Condition::All];
        if names.len() > 1 {
            out.extend(names.iter().map(|m| Condition::Only { modality: m.clone() }));
        }
        if names.len() > 2 {
            out.extend(names.iter().map(|m| Condition::Without { modality: m.clone() }));
        }
        for &p in &self.dropout_p {
            out.extend(names.iter().map(|m| Condition::PerStep { modality: m.clone(), p }));
        }
        for &sigma in &self.noise_sigma {
            out.extend(names.iter().map(|m| Condition::Noise { modality: m.clone(), sigma }));
        }
        if self.frozen {
            out.extend(names.iter().map(|m| Condition::Frozen { modality: m.clone() }));
        }
        out
    }
}

/// Per-episode figures of one agent under one condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episodes {
    /// Return / length, per episode.
    pub per_step: Vec<f64>,
    pub returns: Vec<f64>,
    pub lengths: Vec<usize>,
    /// For each modality with an infinite bound: per element, the smallest and the largest value
    /// seen while it was present.
    pub observed: BTreeMap<String, (Vec<f64>, Vec<f64>)>,
}

impl Episodes {
    /// The scores of the episodes.
    pub fn scores(&self, score: Score) -> &[f64] {
        match score {
            Score::Return => &self.returns,
            Score::PerStep => &self.per_step,
        }
    }

    /// Noise scales from what was observed: per element, max - min.
    pub fn noise_scales(&self) -> NoiseScales {
        self.observed
            .iter()
            .map(|(name, (lo, hi))| {
                let spread = lo.iter().zip(hi).map(|(l, h)| if h >= l { h - l } else { 0.0 }).collect();
                (name.clone(), spread)
            })
            .collect()
    }

    pub fn mean_std(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }
}

/// What acts: a trained agent or the uniform random policy.
pub enum Actor<'a, B: Backend> {
    Agent(&'a dyn Policy<B>),
    Random,
}

/// Runs `config.episodes` episodes of `env_name(params)` under `condition` with `actor`, noise
/// relative to `scales` where given. `params` should not carry training-time `sensor_dropout`;
/// the episode limit is set to `config.steps`.
#[allow(clippy::too_many_arguments)]
pub fn run_episodes<B: Backend>(
    actor: &Actor<'_, B>,
    env_name: &str,
    params: &toml::Table,
    condition: &Condition,
    scales: &NoiseScales,
    config: &EvalConfig,
    device: &B::Device,
    progress: Option<&ProgressBar>,
) -> Result<Episodes, EvalError> {
    let mut params = params.clone();
    params.remove("sensor_dropout");
    params.insert("max_episode_steps".into(), toml::Value::Integer(config.steps as i64));
    let num_envs = config.num_envs.min(config.episodes);
    let vec =
        VecEnvConfig { num_envs, workers: config.workers.min(num_envs), seed: config.seed, ..VecEnvConfig::default() };
    let name = env_name.to_string();
    let (cond, cond_scales) = (condition.clone(), scales.clone());
    let mut envs = VecEnv::new(vec, move |_| cond.wrap_scaled(make(&name, &params)?, &cond_scales))?;
    condition.validate(envs.observation_space())?;
    let space = envs.observation_space().clone();
    let action_space = envs.action_space().clone();
    let (mut per_step, mut returns) = (Vec::with_capacity(config.episodes), Vec::with_capacity(config.episodes));
    let mut lengths = Vec::with_capacity(config.episodes);
    let mut observed = ObservedRanges::new(&space);
    let mut first = 0usize;
    while first < config.episodes {
        let round_seed = config.seed.wrapping_add(first as u64);
        let mut rng = StdRng::seed_from_u64(round_seed);
        let mut obs = envs.reset(Some(round_seed))?.clone();
        observed.see(&obs, &[]);
        let mut ret = vec![0.0f64; num_envs];
        let mut len = vec![0usize; num_envs];
        let mut running = vec![true; num_envs];
        for _ in 0..config.steps {
            let actions = match actor {
                Actor::Agent(agent) => agent.act(&space, &action_space, &obs, config.deterministic, &mut rng, device),
                Actor::Random => BatchActions::sample(&action_space, num_envs, &mut rng),
            };
            let step = envs.step(&actions)?;
            observed.see(&step.obs, &running);
            for i in 0..num_envs {
                if running[i] {
                    ret[i] += step.rewards[i];
                    len[i] += 1;
                    running[i] = !step.done(i);
                }
            }
            obs.clone_from(&step.obs);
            if running.iter().all(|r| !r) {
                break;
            }
        }
        for i in 0..num_envs.min(config.episodes - first) {
            returns.push(ret[i]);
            lengths.push(len[i]);
            per_step.push(ret[i] / len[i].max(1) as f64);
        }
        if let Some(bar) = progress {
            bar.inc(num_envs.min(config.episodes - first) as u64);
        }
        first += num_envs;
    }
    Ok(Episodes { per_step, returns, lengths, observed: observed.into_map(&space) })
}

/// Running minima and maxima of the modalities with an infinite bound.
struct ObservedRanges {
    /// (modality index, per-element min, per-element max).
    tracked: Vec<(usize, Vec<f64>, Vec<f64>)>,
}

impl ObservedRanges {
    fn new(space: &ObsSpace) -> Self {
        let tracked = space
            .iter()
            .enumerate()
            .filter(|(_, (_, spec))| spec.low.iter().zip(&spec.high).any(|(l, h)| !(h - l).is_finite()))
            .map(|(m, (_, spec))| (m, vec![f64::INFINITY; spec.numel()], vec![f64::NEG_INFINITY; spec.numel()]))
            .collect();
        Self { tracked }
    }

    /// Takes in the present values of the sub-environments whose episode is still running
    /// (`running` empty: all of them, as after a reset).
    fn see(&mut self, obs: &BatchObs, running: &[bool]) {
        for (m, lo, hi) in &mut self.tracked {
            let n = lo.len();
            for env in 0..obs.num_envs() {
                if running.get(env) == Some(&false) || !obs.env_present(env)[*m] {
                    continue;
                }
                let mut take = |k: usize, x: f64| {
                    lo[k] = lo[k].min(x);
                    hi[k] = hi[k].max(x);
                };
                let range = env * n..(env + 1) * n;
                match obs.modality(*m) {
                    ModalityData::F32(v) => v[range].iter().enumerate().for_each(|(k, &x)| take(k, x as f64)),
                    ModalityData::U8(v) => v[range].iter().enumerate().for_each(|(k, &x)| take(k, x as f64)),
                }
            }
        }
    }

    fn into_map(self, space: &ObsSpace) -> BTreeMap<String, (Vec<f64>, Vec<f64>)> {
        self.tracked.into_iter().map(|(m, lo, hi)| (space.name(m).to_string(), (lo, hi))).collect()
    }
}

/// One row of the table: an agent under a condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub agent: String,
    pub condition: String,
    pub spec: Condition,
    /// Mean and std over episodes of the per-step reward.
    pub per_step_mean: f64,
    pub per_step_std: f64,
    pub return_mean: f64,
    pub return_std: f64,
    /// Mean episode length (NaN in reports written before it was recorded).
    #[serde(default = "not_recorded")]
    pub length_mean: f64,
    /// `(score - random) / (full - random)`, on the protocol's [`Score`].
    pub retention: f64,
    /// `(score - random) / (reference - random)` where this row's condition has a reference
    /// (see [`EvalReport::references`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_reference: Option<f64>,
}

fn not_recorded() -> f64 {
    f64::NAN
}

impl EvalRow {
    /// Mean and std over episodes of `score`.
    pub fn score(&self, score: Score) -> (f64, f64) {
        match score {
            Score::Return => (self.return_mean, self.return_std),
            Score::PerStep => (self.per_step_mean, self.per_step_std),
        }
    }
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub env: String,
    pub config: EvalConfig,
    /// The uniform random policy with every sensor: per-step mean and std, return mean and std.
    pub random_per_step_mean: f64,
    pub random_per_step_std: f64,
    #[serde(default = "not_recorded")]
    pub random_return_mean: f64,
    #[serde(default = "not_recorded")]
    pub random_return_std: f64,
    /// The noise scales measured from the random policy's episodes, for the modalities with an
    /// infinite bound (the others' noise is relative to their bounds).
    #[serde(default)]
    pub noise_scales: NoiseScales,
    pub agents: Vec<String>,
    pub rows: Vec<EvalRow>,
    /// The references of the `vs_reference` fractions, one per condition that has one (empty:
    /// none were given, and the report is as it was before references existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub wall_seconds: f64,
}

/// What a condition's rows are compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The condition whose rows it is the reference of: `all` or `<modality> only`.
    pub condition: String,
    pub kind: ReferenceKind,
    /// The reference's runs, each evaluated with the protocol of the report.
    pub runs: Vec<ReferenceRun>,
    /// The mean over `runs` of their mean score (on the protocol's [`Score`]).
    pub score: f64,
}

/// Where a [`Reference`] comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReferenceKind {
    /// Runs trained on this modality alone, run under `<modality> only`.
    Specialist { modality: String },
    /// Runs trained with every sensor, named as the reference, run with every sensor.
    Full,
    /// The evaluated agent with the best score with every sensor (no full reference named).
    BestAgent,
}

/// One run of a [`Reference`]: mean and std over episodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRun {
    pub label: String,
    pub per_step_mean: f64,
    pub per_step_std: f64,
    pub return_mean: f64,
    pub return_std: f64,
    pub length_mean: f64,
}

impl ReferenceRun {
    /// Mean and std over episodes of `score`.
    pub fn score(&self, score: Score) -> (f64, f64) {
        match score {
            Score::Return => (self.return_mean, self.return_std),
            Score::PerStep => (self.per_step_mean, self.per_step_std),
        }
    }
}

impl Reference {
    /// For tables: "`pixels only`: specialist on pixels alone, `a`, `b`: -0.700".
    pub fn describe(&self) -> String {
        let labels = self.runs.iter().map(|r| format!("`{}`", r.label)).collect::<Vec<_>>().join(", ");
        let what = match &self.kind {
            ReferenceKind::Specialist { modality } => format!("specialist on {modality} alone"),
            ReferenceKind::Full => "full-sensor reference".to_string(),
            ReferenceKind::BestAgent => "the best agent here with every sensor".to_string(),
        };
        let mean = if self.runs.len() > 1 { format!(" (mean of {} runs)", self.runs.len()) } else { String::new() };
        format!("`{}`: {what}, {labels}: {:.3}{mean}", self.condition, self.score)
    }
}

/// An agent or a reference run, as [`evaluate`] takes them: its label, the policy, and the
/// observation space its checkpoint was trained on.
pub type LabelledPolicy<'a, B> = (String, &'a dyn Policy<B>, ObsSpace);

/// Runs whose score a condition's rows are compared with ([`evaluate_with_references`]).
pub struct References<'a, B: Backend> {
    /// Per modality, its specialists: runs trained on that modality alone (their mean is the
    /// reference of the `<modality> only` rows).
    pub specialists: Vec<(String, Vec<LabelledPolicy<'a, B>>)>,
    /// Runs trained with every sensor whose mean score is the reference of the `all` rows.
    /// Empty: the best `all` score among the evaluated agents, when there are specialists.
    pub full: Vec<LabelledPolicy<'a, B>>,
}

impl<B: Backend> Default for References<'_, B> {
    fn default() -> Self {
        Self { specialists: Vec::new(), full: Vec::new() }
    }
}

impl<B: Backend> References<'_, B> {
    /// No reference at all: the report is the plain sensor-failure table.
    pub fn is_empty(&self) -> bool {
        self.specialists.is_empty() && self.full.is_empty()
    }

    /// Reference runs to evaluate (each runs `episodes` episodes once).
    pub fn runs(&self) -> usize {
        self.specialists.iter().map(|(_, runs)| runs.len()).sum::<usize>() + self.full.len()
    }

    /// Checks every reference against the environment's space (`conditions`: the evaluation's),
    /// before any episode runs: a specialist's modality must be one of the space's and have a
    /// `<modality> only` condition, and its checkpoint must observe that modality alone, with the
    /// same spec; a full-sensor reference must observe the space itself.
    pub fn validate(&self, space: &ObsSpace, conditions: &[Condition]) -> Result<(), EvalError> {
        let names = || space.names().collect::<Vec<_>>().join(", ");
        for (k, (modality, runs)) in self.specialists.iter().enumerate() {
            if self.specialists[..k].iter().any(|(m, _)| m == modality) {
                return Err(EvalError::Invalid(format!(
                    "specialists for `{modality}` are given twice: list all of its runs in one entry"
                )));
            }
            let Some(index) = space.index_of(modality) else {
                return Err(EvalError::Invalid(format!(
                    "specialist for `{modality}`: the environment has no modality `{modality}` (it has {})",
                    names()
                )));
            };
            let only = Condition::Only { modality: modality.clone() };
            if !conditions.contains(&only) {
                return Err(EvalError::Invalid(format!(
                    "specialist for `{modality}`: the evaluation has no `{}` condition (the environment has one \
                     modality only: {})",
                    only.label(),
                    names()
                )));
            }
            if runs.is_empty() {
                return Err(EvalError::Invalid(format!("specialist for `{modality}`: no run given")));
            }
            for (label, _, own) in runs {
                let extra: Vec<&str> = own.names().filter(|n| n != modality).collect();
                if !extra.is_empty() {
                    return Err(EvalError::Invalid(format!(
                        "specialist `{label}` for `{modality}` observes {own}: it needs {}, which the `{}` condition \
                         lacks; a specialist is trained on `{modality}` alone",
                        extra.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                        only.label()
                    )));
                }
                match own.index_of(modality) {
                    Some(j) if own.spec(j) == space.spec(index) => {}
                    Some(j) => {
                        return Err(EvalError::Invalid(format!(
                            "specialist `{label}` for `{modality}`: its `{modality}` is {:?} {:?} in [{:?}, {:?}], the \
                             environment's is {:?} {:?} in [{:?}, {:?}] (another environment setting?)",
                            own.spec(j).dtype,
                            own.spec(j).shape,
                            own.spec(j).low.first(),
                            own.spec(j).high.first(),
                            space.spec(index).dtype,
                            space.spec(index).shape,
                            space.spec(index).low.first(),
                            space.spec(index).high.first()
                        )))
                    }
                    None => {
                        return Err(EvalError::Invalid(format!(
                            "specialist `{label}` for `{modality}` observes {own}, not `{modality}`"
                        )))
                    }
                }
            }
        }
        for (label, _, own) in &self.full {
            if own != space {
                return Err(EvalError::Invalid(format!(
                    "full-sensor reference `{label}` was trained on observations {own}, but the environment gives \
                     {space}"
                )));
            }
        }
        Ok(())
    }
}

/// `(score - random) / (full - random)`; NaN when the agent's score with every sensor equals the
/// random policy's (no margin to compare with).
pub fn retention_ratio(score: f64, full: f64, random: f64) -> f64 {
    let denom = full - random;
    if denom.abs() < 1e-12 {
        f64::NAN
    } else {
        (score - random) / denom
    }
}

/// `(score - random) / (reference - random)`: how much of a reference's margin over the random
/// policy a score keeps (1 = as good as the reference, 0 = no better than random, above 1 =
/// better than the reference); NaN when the reference scores exactly the random policy's mean
/// (a reference below it flips the sign). The same formula as [`retention_ratio`], with another
/// run's score in place of the agent's own.
pub fn reference_fraction(score: f64, reference: f64, random: f64) -> f64 {
    retention_ratio(score, reference, random)
}

/// Evaluates every `(label, agent)` under every condition of `config` on `env_name(params)`,
/// after checking each agent's observation space against the environment's.
pub fn evaluate<B: Backend>(
    agents: &[(String, &dyn Policy<B>, ObsSpace)],
    env_name: &str,
    params: &toml::Table,
    config: &EvalConfig,
    device: &B::Device,
    progress: Option<&ProgressBar>,
) -> Result<EvalReport, EvalError> {
    evaluate_with_references(agents, &References::default(), env_name, params, config, device, progress)
}

/// As [`evaluate`], with references (see the module's documentation): the specialists run the
/// `<modality> only` episodes seeing only their sensor, the full-sensor references the `all`
/// episodes, and each row of a condition with a reference gets its `vs_reference` fraction.
/// With specialists and no full-sensor reference, the `all` rows are compared with the best
/// evaluated agent's `all` score. Every reference is checked before any episode runs.
pub fn evaluate_with_references<B: Backend>(
    agents: &[(String, &dyn Policy<B>, ObsSpace)],
    references: &References<'_, B>,
    env_name: &str,
    params: &toml::Table,
    config: &EvalConfig,
    device: &B::Device,
    progress: Option<&ProgressBar>,
) -> Result<EvalReport, EvalError> {
    config.validate()?;
    let started = Instant::now();
    let mut probe_params = params.clone();
    probe_params.remove("sensor_dropout");
    let space = make(env_name, &probe_params)?.observation_space().clone();
    for (label, _, agent_space) in agents {
        if *agent_space != space {
            return Err(EvalError::Invalid(format!(
                "agent `{label}` was trained on observations {agent_space}, but `{env_name}` gives {space}"
            )));
        }
    }
    let conditions = config.conditions(&space);
    for c in &conditions {
        c.validate(&space)?;
    }
    references.validate(&space, &conditions)?;
    let none = NoiseScales::new();
    let random = run_episodes::<B>(&Actor::Random, env_name, params, &Condition::All, &none, config, device, progress)?;
    let random_score = Episodes::mean_std(random.scores(config.score)).0;
    // Noise on a modality with an infinite bound: relative to the random policy's spread.
    let noise_scales = random.noise_scales();
    for c in &conditions {
        if let Condition::Noise { modality, .. } = c {
            if let Some((lo, hi)) = random.observed.get(modality) {
                if let Some(k) = (0..lo.len()).find(|&k| lo[k] > hi[k]) {
                    return Err(EvalError::Invalid(format!(
                        "condition `{}`: modality `{modality}` has an infinite bound, so its noise scale is measured \
                         from the random policy's episodes, but its element {k} was never observed there",
                        c.label()
                    )));
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (label, agent, _) in agents {
        let mut full = f64::NAN;
        for condition in &conditions {
            let e = run_episodes(
                &Actor::Agent(*agent),
                env_name,
                params,
                condition,
                &noise_scales,
                config,
                device,
                progress,
            )?;
            let (per_step_mean, per_step_std) = Episodes::mean_std(&e.per_step);
            let (return_mean, return_std) = Episodes::mean_std(&e.returns);
            let score = Episodes::mean_std(e.scores(config.score)).0;
            if *condition == Condition::All {
                full = score;
            }
            let lengths: Vec<f64> = e.lengths.iter().map(|&l| l as f64).collect();
            rows.push(EvalRow {
                agent: label.clone(),
                condition: condition.label(),
                spec: condition.clone(),
                per_step_mean,
                per_step_std,
                return_mean,
                return_std,
                length_mean: Episodes::mean_std(&lengths).0,
                retention: retention_ratio(score, full, random_score),
                vs_reference: None,
            });
        }
    }
    let reference_runs =
        |runs: &[LabelledPolicy<'_, B>], modality: Option<&str>| -> Result<Vec<ReferenceRun>, EvalError> {
            let mut out = Vec::new();
            for (label, agent, own) in runs {
                let (projected, condition);
                let actor = match modality {
                    Some(m) => {
                        let keep = own.names().map(|n| space.require(n)).collect::<Result<Vec<_>, _>>()?;
                        projected = Projected { inner: *agent, keep, space: own.clone() };
                        condition = Condition::Only { modality: m.to_string() };
                        Actor::Agent(&projected as &dyn Policy<B>)
                    }
                    None => {
                        condition = Condition::All;
                        Actor::Agent(*agent)
                    }
                };
                let e = run_episodes(&actor, env_name, params, &condition, &noise_scales, config, device, progress)?;
                let lengths: Vec<f64> = e.lengths.iter().map(|&l| l as f64).collect();
                let (per_step_mean, per_step_std) = Episodes::mean_std(&e.per_step);
                let (return_mean, return_std) = Episodes::mean_std(&e.returns);
                out.push(ReferenceRun {
                    label: label.clone(),
                    per_step_mean,
                    per_step_std,
                    return_mean,
                    return_std,
                    length_mean: Episodes::mean_std(&lengths).0,
                });
            }
            Ok(out)
        };
    let mut found = Vec::new();
    let reference = |condition: String, kind: ReferenceKind, runs: Vec<ReferenceRun>| {
        let scores: Vec<f64> = runs.iter().map(|r| r.score(config.score).0).collect();
        Reference { condition, kind, score: Episodes::mean_std(&scores).0, runs }
    };
    if !references.full.is_empty() {
        found.push(reference(Condition::All.label(), ReferenceKind::Full, reference_runs(&references.full, None)?));
    } else if !references.specialists.is_empty() {
        let score = |r: &EvalRow| r.score(config.score).0;
        let best = rows
            .iter()
            .filter(|r| r.spec == Condition::All)
            .max_by(|a, b| score(a).total_cmp(&score(b)))
            .ok_or_else(|| EvalError::Invalid("specialists need an agent to compare with".into()))?;
        let run = ReferenceRun {
            label: best.agent.clone(),
            per_step_mean: best.per_step_mean,
            per_step_std: best.per_step_std,
            return_mean: best.return_mean,
            return_std: best.return_std,
            length_mean: best.length_mean,
        };
        found.push(reference(Condition::All.label(), ReferenceKind::BestAgent, vec![run]));
    }
    for (modality, runs) in &references.specialists {
        let condition = Condition::Only { modality: modality.clone() }.label();
        let kind = ReferenceKind::Specialist { modality: modality.clone() };
        found.push(reference(condition, kind, reference_runs(runs, Some(modality))?));
    }
    for row in &mut rows {
        if let Some(r) = found.iter().find(|r| r.condition == row.condition) {
            row.vs_reference = Some(reference_fraction(row.score(config.score).0, r.score, random_score));
        }
    }
    let (random_per_step_mean, random_per_step_std) = Episodes::mean_std(&random.per_step);
    let (random_return_mean, random_return_std) = Episodes::mean_std(&random.returns);
    Ok(EvalReport {
        env: env_name.to_string(),
        config: config.clone(),
        random_per_step_mean,
        random_per_step_std,
        random_return_mean,
        random_return_std,
        noise_scales,
        agents: agents.iter().map(|(l, _, _)| l.clone()).collect(),
        rows,
        references: found,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

impl EvalReport {
    /// The random policy's score with every sensor: mean and std over episodes.
    pub fn random_score(&self) -> (f64, f64) {
        match self.config.score {
            Score::Return => (self.random_return_mean, self.random_return_std),
            Score::PerStep => (self.random_per_step_mean, self.random_per_step_std),
        }
    }

    /// Notes a table needs below its header: measured noise scales, and per-step scores of
    /// episodes that did not all last the full length.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for name in self.noise_scales.keys() {
            notes.push(format!(
                "`{name}` has an infinite bound: its noise is relative to each value's spread (max - min) over the \
                 random policy's episodes"
            ));
        }
        let short = self.rows.iter().any(|r| r.length_mean < self.config.steps as f64);
        if self.config.score == Score::PerStep && short {
            notes.push(format!(
                "some episodes ended before {} steps: the mean per-step reward does not show how long they lasted \
                 (the episode return, `--score return`, does)",
                self.config.steps
            ));
        }
        notes
    }

    /// The table as markdown: one row per condition, one column per agent (`mean ± std
    /// (retention)`, then `[vs reference]` in the rows of a condition with a reference).
    pub fn to_markdown(&self) -> String {
        let (random_mean, random_std) = self.random_score();
        let mut out = format!(
            "{} episodes x {} steps on `{}`, {} policy; score = {} (mean ± std over episodes), \
             (retention) = (score - random) / (all - random); random policy: {:.3} ± {:.3}\n\n",
            self.config.episodes,
            self.config.steps,
            self.env,
            if self.config.deterministic { "deterministic" } else { "stochastic" },
            self.config.score.describe(),
            random_mean,
            random_std
        );
        for note in self.notes() {
            out.push_str(&format!("Note: {note}.\n\n"));
        }
        if !self.references.is_empty() {
            out.push_str("[vs reference] = (score - random) / (reference - random). References: ");
            out.push_str(&self.references.iter().map(Reference::describe).collect::<Vec<_>>().join("; "));
            out.push_str(".\n\n");
        }
        out.push_str("| condition |");
        for a in &self.agents {
            out.push_str(&format!(" {a} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.agents.len()));
        out.push('\n');
        let mut conditions: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !conditions.contains(&r.condition.as_str()) {
                conditions.push(&r.condition);
            }
        }
        for c in conditions {
            out.push_str(&format!("| {c} |"));
            for a in &self.agents {
                match self.rows.iter().find(|r| r.agent == *a && r.condition == c) {
                    Some(r) => {
                        let (mean, std) = r.score(self.config.score);
                        let vs = r.vs_reference.map(|f| format!(" [{f:.2}]")).unwrap_or_default();
                        out.push_str(&format!(" {mean:.3} ± {std:.3} ({:.2}){vs} |", r.retention))
                    }
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// One CSV line per row; `reference` and `vs_reference` are empty in the rows of a condition
    /// without a reference.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "agent,condition,per_step_mean,per_step_std,return_mean,return_std,length_mean,score,retention,\
             random_per_step_mean,random_return_mean,reference,vs_reference\n",
        );
        for r in &self.rows {
            let reference = self.references.iter().find(|x| x.condition == r.condition);
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                r.agent,
                r.condition,
                r.per_step_mean,
                r.per_step_std,
                r.return_mean,
                r.return_std,
                r.length_mean,
                self.config.score.key(),
                r.retention,
                self.random_per_step_mean,
                self.random_return_mean,
                reference.map(|x| x.score.to_string()).unwrap_or_default(),
                r.vs_reference.map(|f| f.to_string()).unwrap_or_default()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_ratio_is_score_above_random_over_full_above_random() {
        assert_eq!(retention_ratio(-1.0, -1.0, -6.0), 1.0);
        assert_eq!(retention_ratio(-6.0, -1.0, -6.0), 0.0);
        assert_eq!(retention_ratio(-3.5, -1.0, -6.0), 0.5);
        assert!((retention_ratio(-7.75, -1.0, -6.0) + 0.35).abs() < 1e-12, "worse than random is negative");
        assert!(retention_ratio(-6.0, -6.0, -6.0).is_nan());
    }

    #[test]
    fn the_reference_fraction_is_score_above_random_over_reference_above_random() {
        // Sound only scores -2.2; a sound specialist -1.2; random -6.2: 4/5 of its margin.
        assert!((reference_fraction(-2.2, -1.2, -6.2) - 0.8).abs() < 1e-12);
        assert_eq!(reference_fraction(-1.2, -1.2, -6.2), 1.0, "as good as the reference");
        assert!((reference_fraction(-0.2, -1.2, -6.2) - 1.2).abs() < 1e-12, "better than the reference");
        assert_eq!(reference_fraction(-6.2, -1.2, -6.2), 0.0);
        assert!(reference_fraction(-2.0, -6.2, -6.2).is_nan(), "a reference no better than random says nothing");
        // Returns (higher is better) work alike: 150 against a specialist's 250, random 50.
        assert_eq!(reference_fraction(150.0, 250.0, 50.0), 0.5);
    }

    #[test]
    fn the_matrix_has_each_modality_alone_and_each_failure_mode_once() {
        let space = m3ixup_envs::make("multimodal-pendulum", &toml::Table::new()).unwrap().observation_space().clone();
        let config = EvalConfig { dropout_p: vec![0.3], noise_sigma: vec![0.1], ..EvalConfig::default() };
        let labels: Vec<String> = config.conditions(&space).iter().map(|c| c.label()).collect();
        assert_eq!(
            labels,
            [
                "all",
                "pixels only",
                "sound only",
                "pixels p=0.3",
                "sound p=0.3",
                "pixels noise 0.1",
                "sound noise 0.1",
                "pixels frozen",
                "sound frozen"
            ]
        );
    }

    #[test]
    fn unknown_modalities_and_bad_probabilities_are_rejected() {
        let space = m3ixup_envs::make("multimodal-pendulum", &toml::Table::new()).unwrap().observation_space().clone();
        let err = Condition::Only { modality: "lidar".into() }.validate(&space).unwrap_err().to_string();
        assert!(err.contains("lidar"), "{err}");
        let err = Condition::PerStep { modality: "sound".into(), p: 1.5 }.validate(&space).unwrap_err().to_string();
        assert!(err.contains("1.5"), "{err}");
        let err = EvalConfig { dropout_p: vec![-0.1], ..EvalConfig::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("dropout_p"), "{err}");
    }
}
