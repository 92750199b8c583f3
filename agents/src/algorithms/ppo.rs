//! PPO (Schulman et al. 2017) whose encoder is the M3ixup encoder, with the M3ixup loss as an
//! auxiliary term of the same update (docs/M3IXUP.md section 4, "this project's main mode").
//!
//! The loop ([`train`]) reads top to bottom like CleanRL's `ppo_continuous_action.py`: seeding,
//! environments, agent and optimiser, then per update a rollout with one batched forward pass
//! per vector step, GAE that bootstraps truncated episodes from their final observation and
//! never terminated ones, and minibatch epochs. Each minibatch has **one combined loss**
//! ([`ppo_loss`]): `policy + vf_coef * value - ent_coef * entropy + aux_weight * M3ixup`, and
//! one backward pass.
//!
//! **Which loss trains what.** The policy, value and entropy terms reach the actor, the critic,
//! the log-std and, through the representation the heads read, the encoder (for complete
//! observations: the joint processor and the head g when `policy_input = "latent"`). The
//! auxiliary loss reaches every encoder parameter (each f_u, f_M and g) and nothing else. The
//! optional cross-modal consistency term (`ppo.consistency_weight`) reaches each f_u, g (with
//! `policy_input = "latent"`) and the actor through the policy given each modality alone; the
//! policy given every modality is its fixed target, on the complete rows, or on every row when
//! the dropout kept the withheld sensors' data (`ppo.consistency_rows = "all"`).
//!
//! **Training-time sensor dropout** (the "sensor dropout" baseline, Liu et al. 2017) is the
//! environment's `sensor_dropout` parameter: the policy then learns from the fallback
//! representation of incomplete observations, and the auxiliary loss uses the complete rows of
//! each minibatch only (its views need every modality).

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use m3ixup_envs::vector::BatchObs;
use m3ixup_envs::{
    make, ActionSpace, Obs, ObsSpace, VecEnv, VecEnvConfig, VecEnvState, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN,
};

use crate::algorithms::actor_critic::{choose_actions, ActorCritic, ActorCriticConfig};
use crate::algorithms::rollout::{gae, Rollout};
use crate::algorithms::{Algorithm, AlgorithmConfig};
pub use crate::infra::checkpoint::{
    latest_checkpoint, load_checkpoint_state, CheckpointState, TrainError as PpoError, AGENT_FILE, CHECKPOINT_POINTER,
    OPTIMIZER_FILE, STATE_FILE,
};
use crate::infra::checkpoint::{
    load_module, load_record, load_saved_state, loop_state_bytes, record_bytes, CheckpointRecorder, LOOP_STATE_FILE,
};
use crate::infra::harness::{Harness, Progress, STEP_KEY};
use crate::infra::harness::{TrainOptions, TrainSummary};
use crate::infra::optim::clip_grad_norm;
use crate::infra::run::RunDir;
use crate::representation::encoder::{EncoderConfig, Features, MultimodalInput, Presence};
use crate::representation::losses::{m3ixup_loss_on_features, LossTerm, M3ixupLossConfig, M3ixupReport, MixupDraws};
use crate::representation::sections::{EnvSection, LossSection};
use crate::representation::storage::{batch_input, DeviceObs};

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `train` config for `algo = "ppo"` (`configs/ppo-*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// The algorithm: `"ppo"`.
    pub algo: String,
    /// The environment and its parameters (`sensor_dropout` here gives training-time dropout).
    pub env: EnvSection,
    /// How the vector environment is stepped.
    pub rollout: RolloutConfig,
    /// The M3ixup encoder.
    pub encoder: EncoderConfig,
    /// The actor and critic heads.
    pub policy: ActorCriticConfig,
    /// PPO's hyperparameters.
    pub ppo: PpoSection,
    /// The auxiliary representation loss: `kind = "m3ixup" | "gmc" | "none"`, then the M3ixup
    /// loss options (as `[loss]` of `pretrain`). Its weight is `ppo.aux_weight`.
    pub aux: LossSection,
    /// Seeding, budget, checkpoints.
    pub train: TrainSection,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            algo: "ppo".into(),
            env: EnvSection::default(),
            rollout: RolloutConfig::default(),
            encoder: EncoderConfig::default(),
            policy: ActorCriticConfig::default(),
            ppo: PpoSection::default(),
            aux: LossSection::default(),
            train: TrainSection::default(),
        }
    }
}

/// `[rollout]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Sub-environments stepped together (one forward pass per vector step serves all).
    pub num_envs: usize,
    /// Threads stepping them, the calling thread included (0 or 1: inline, deterministic).
    pub workers: usize,
    /// Vector steps per update: each update learns from `num_envs * steps` transitions.
    pub steps: usize,
    /// Where the rollout's forward passes run: `"auto"` (default: `"learner"` on a CPU
    /// learner, `"cpu"` on any other), `"learner"` (the learner's device and weights) or `"cpu"`
    /// (a CPU copy of the weights, refreshed once per update).
    pub inference: InferenceDevice,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self { num_envs: 16, workers: 0, steps: 128, inference: InferenceDevice::Auto }
    }
}

/// Where the rollout's forward passes run (`rollout.inference`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InferenceDevice {
    /// `Learner` when the learner computes on the CPU (flex, LibTorch's CPU device), `Cpu` on
    /// any other device. On burn's CubeCL backends the rollout's small batches (one row per
    /// environment) would also add shapes of their own to the first update's autotuning: on
    /// wgpu (lavapipe), 11 autotunes and 36 s of the main config's cold first update
    /// (docs/GPU.md).
    #[default]
    Auto,
    /// On the learner's device with the learner's weights: no copy. Right for CPU learners.
    Learner,
    /// On the CPU (burn's Flex backend) with a copy of the weights made once per update: for a
    /// GPU learner, where each vector step's small forward pass pays kernel launches and two
    /// transfers (`bench/gpu.sh` measures both).
    Cpu,
}

impl InferenceDevice {
    /// `Auto` made concrete for a learner on `device` of backend `B`.
    pub fn resolve<B: Backend>(self, device: &B::Device) -> InferenceDevice {
        match self {
            InferenceDevice::Auto => {
                let name = B::name(device);
                if name.contains("flex") || name.contains("libtorch<cpu>") {
                    InferenceDevice::Learner
                } else {
                    InferenceDevice::Cpu
                }
            }
            chosen => chosen,
        }
    }
}

/// `[ppo]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoSection {
    /// Adam's learning rate (> 0).
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over the run.
    pub anneal_lr: bool,
    /// Discount factor, in [0, 1].
    pub gamma: f64,
    /// Rewards are multiplied by this before GAE (the value targets' scale; metrics report the
    /// environment's own rewards). > 0.
    pub reward_scale: f64,
    /// GAE's lambda, in [0, 1].
    pub gae_lambda: f64,
    /// Passes over each rollout.
    pub update_epochs: usize,
    /// Transitions per minibatch (at most `num_envs * steps`; >= 2 when an auxiliary loss is on).
    pub minibatch_size: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// The ratio clip epsilon.
    pub clip_coef: f64,
    /// Clip the value loss around the old values with `clip_coef` as well.
    pub clip_vloss: bool,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Weight of the entropy bonus.
    pub ent_coef: f64,
    /// Weight of the auxiliary (M3ixup or GMC) loss in the combined loss.
    pub aux_weight: f64,
    /// If set, the auxiliary weight moves linearly from `aux_weight` (first update) to this
    /// value (last update), as `anneal_lr` moves the learning rate: strong alignment early,
    /// lighter late. Unset: `aux_weight` throughout. >= 0.
    pub aux_weight_final: Option<f64>,
    /// With `aux_weight_final`: the share of the run, in (0, 1], over which the weight moves to
    /// it; it stays there afterwards (0.5: final at mid-run). 1 = the whole run.
    pub aux_anneal_fraction: f64,
    /// Rows of each minibatch the auxiliary loss sees: the first `aux_rows` (a random subset, as
    /// minibatches are drawn in shuffled order); 0 = every row. Its cost grows with the rows (a
    /// second trunk pass for L_in, `B x B` similarity blocks), the policy loss always sees every
    /// row. 0, or in `[2, minibatch_size]`.
    pub aux_rows: usize,
    /// Weight of the cross-modal policy consistency term: on each row with every modality, the
    /// KL divergence from the policy given every modality (held fixed: the teacher) to the
    /// policy given each modality alone, summed over the modalities, averaged over the
    /// minibatch's rows (rows missing a modality add 0, unless `consistency_rows = "all"`). It
    /// teaches each sensor alone to act as the agent acts with all of them, on the states the
    /// complete agent visits; with training-time dropout the sensor's own episodes still train
    /// it by reward. >= 0; 0 = off.
    pub consistency_weight: f64,
    /// Which rows the consistency term sees: `"complete"`, those with every modality, or
    /// `"all"`, every row, the complete policy then read from the data of the sensors a
    /// training-time dropout withheld from the agent (it needs
    /// `env.params.sensor_dropout.keep_data = true`): each sensor alone is also taught on the
    /// states its own episodes visit.
    pub consistency_rows: ConsistencyRows,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Stop an update's epochs early when the approximate KL exceeds this (0 = never).
    pub target_kl: f64,
}

/// `ppo.consistency_rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConsistencyRows {
    /// The rows with every modality.
    #[default]
    Complete,
    /// Every row, with the data the dropout kept (`sensor_dropout.keep_data`).
    All,
}

impl Default for PpoSection {
    fn default() -> Self {
        Self {
            learning_rate: 3e-4,
            anneal_lr: true,
            gamma: 0.99,
            reward_scale: 1.0,
            gae_lambda: 0.95,
            update_epochs: 10,
            minibatch_size: 64,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: false,
            vf_coef: 0.5,
            ent_coef: 0.0,
            aux_weight: 1.0,
            aux_weight_final: None,
            aux_anneal_fraction: 1.0,
            aux_rows: 0,
            consistency_weight: 0.0,
            consistency_rows: ConsistencyRows::Complete,
            max_grad_norm: 0.5,
            target_kl: 0.0,
        }
    }
}

impl PpoSection {
    /// The auxiliary loss's weight at `update` (1-based) of `num_updates`: `aux_weight`, or the
    /// linear path from it to `aux_weight_final`, reached after `aux_anneal_fraction` of the run.
    pub fn aux_weight_at(&self, update: usize, num_updates: usize) -> f64 {
        match self.aux_weight_final {
            None => self.aux_weight,
            Some(last) => {
                let t = if num_updates > 1 { (update.max(1) - 1) as f64 / (num_updates - 1) as f64 } else { 0.0 };
                let t = t / self.aux_anneal_fraction;
                self.aux_weight + (last - self.aux_weight) * t.min(1.0)
            }
        }
    }
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// The root seed: environments (sub-environment i: seed + i), network initialisation,
    /// action sampling, minibatch order and mixup draws.
    pub seed: u64,
    /// Environment steps (summed over sub-environments) to train for; rounded down to whole
    /// updates.
    pub total_steps: u64,
    /// Write a checkpoint every this many updates (and always after the last).
    pub checkpoint_every: usize,
    /// Also write the metrics as TensorBoard scalars (`events.out.tfevents.*` in the run
    /// directory; `agents::infra::run::TensorBoard`).
    pub tensorboard: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self { seed: 1, total_steps: 1_000_000, checkpoint_every: 10, tensorboard: true }
    }
}

impl PpoConfig {
    /// Transitions per update.
    pub fn batch_size(&self) -> usize {
        self.rollout.num_envs * self.rollout.steps
    }

    /// Whole updates in `train.total_steps`.
    pub fn num_updates(&self) -> usize {
        (self.train.total_steps / self.batch_size().max(1) as u64) as usize
    }

    /// The auxiliary loss the update evaluates (every term off for `kind = "none"`).
    pub fn aux_loss(&self) -> Result<M3ixupLossConfig, PpoError> {
        self.aux.effective().map_err(|e| PpoError::config("aux.terms", e.reason))
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), PpoError> {
        let bad = |field: &str, reason: String| Err(PpoError::config(field, reason));
        if self.algo != "ppo" {
            return bad("algo", format!("`{}` is not an algorithm this build trains (expected \"ppo\")", self.algo));
        }
        // Build one environment now, so bad parameters fail before a run directory exists.
        let env = self.env.checked()?;
        let r = &self.rollout;
        if r.num_envs == 0 {
            return bad("rollout.num_envs", "must be at least 1".into());
        }
        if r.workers > r.num_envs {
            return bad(
                "rollout.workers",
                format!("{} workers for {} environments: at most num_envs", r.workers, r.num_envs),
            );
        }
        if r.steps == 0 {
            return bad("rollout.steps", "must be at least 1".into());
        }
        let p = &self.ppo;
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(PpoError::config(field, format!("must be a finite number > 0, got {v}")))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(PpoError::config(field, format!("must be a finite number >= 0, got {v}")))
            }
        };
        let unit = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PpoError::config(field, format!("must lie in [0, 1], got {v}")))
            }
        };
        positive("ppo.learning_rate", p.learning_rate)?;
        unit("ppo.gamma", p.gamma)?;
        unit("ppo.gae_lambda", p.gae_lambda)?;
        positive("ppo.clip_coef", p.clip_coef)?;
        positive("ppo.reward_scale", p.reward_scale)?;
        positive("ppo.max_grad_norm", p.max_grad_norm)?;
        for (field, v) in [
            ("ppo.vf_coef", p.vf_coef),
            ("ppo.ent_coef", p.ent_coef),
            ("ppo.aux_weight", p.aux_weight),
            ("ppo.target_kl", p.target_kl),
            ("ppo.consistency_weight", p.consistency_weight),
        ] {
            non_negative(field, v)?;
        }
        let modalities = env.observation_space().len();
        if p.consistency_weight > 0.0 && modalities < 2 {
            return bad(
                "ppo.consistency_weight",
                format!(
                    "{} needs two sensors at least; `{}` observes {modalities}: set it to 0",
                    p.consistency_weight, self.env.name
                ),
            );
        }
        let keeps_data = self
            .env
            .params
            .get("sensor_dropout")
            .and_then(|d| d.get("keep_data"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        if p.consistency_rows == ConsistencyRows::All && !keeps_data {
            return bad(
                "ppo.consistency_rows",
                "\"all\" reads the data of the sensors the training-time dropout withheld: set \
                 env.params.sensor_dropout.keep_data = true (or use \"complete\")"
                    .into(),
            );
        }
        if let Some(w) = p.aux_weight_final {
            non_negative("ppo.aux_weight_final", w)?;
        }
        if !(p.aux_anneal_fraction > 0.0 && p.aux_anneal_fraction <= 1.0) {
            return bad("ppo.aux_anneal_fraction", format!("{} is outside (0, 1]", p.aux_anneal_fraction));
        }
        if p.update_epochs == 0 {
            return bad("ppo.update_epochs", "must be at least 1".into());
        }
        let aux = self.aux.checked()?;
        let aux_on = LossTerm::ALL.iter().any(|&t| aux.enabled(t));
        let min_batch = if aux_on { 2 } else { 1 };
        if p.minibatch_size < min_batch || p.minibatch_size > self.batch_size() {
            return bad(
                "ppo.minibatch_size",
                format!(
                    "{} must lie in [{min_batch}, rollout.num_envs * rollout.steps = {}]",
                    p.minibatch_size,
                    self.batch_size()
                ),
            );
        }
        if aux_on && p.aux_rows != 0 && !(2..=p.minibatch_size).contains(&p.aux_rows) {
            return bad(
                "ppo.aux_rows",
                format!(
                    "{} must be 0 (every row) or lie in [2, ppo.minibatch_size = {}]",
                    p.aux_rows, p.minibatch_size
                ),
            );
        }
        if self.num_updates() == 0 {
            return bad(
                "train.total_steps",
                format!("{} is less than one update of {} transitions", self.train.total_steps, self.batch_size()),
            );
        }
        if self.train.checkpoint_every == 0 {
            return bad("train.checkpoint_every", "must be at least 1".into());
        }
        self.encoder.validate().map_err(PpoError::in_section("encoder"))?;
        self.policy.validate().map_err(PpoError::in_section("policy"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The combined loss of one minibatch
// ---------------------------------------------------------------------------------------------

/// One minibatch of a rollout on the learner's device.
#[derive(Clone, Debug)]
pub struct Minibatch<B: Backend> {
    pub obs: MultimodalInput<B>,
    pub presence: Presence,
    /// Raw actions `[M, width]`.
    pub actions: Tensor<B, 2>,
    /// `[M]` each.
    pub old_log_probs: Tensor<B, 1>,
    pub old_values: Tensor<B, 1>,
    pub advantages: Tensor<B, 1>,
    pub returns: Tensor<B, 1>,
    /// The complete observations of the minibatch, for the auxiliary loss, when some rows lack
    /// a modality (`None` when every row is complete: the auxiliary loss then reuses `obs`).
    pub complete_obs: Option<MultimodalInput<B>>,
}

/// What part of its minibatch a [`Minibatch`] holds. The learner may split a minibatch's rows
/// into shards computed on several threads ([`TrainOptions::learner_threads`]); each shard's
/// mean terms are then scaled by its fraction of the rows, and its advantages normalised with
/// the whole minibatch's mean and standard deviation, so that the shards' losses, and their
/// gradients, sum to the whole minibatch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowShare {
    /// The shard's rows over the minibatch's rows.
    pub fraction: f32,
    /// The whole minibatch's advantage mean and (unbiased) standard deviation; `None`: the
    /// minibatch's own (the whole minibatch).
    pub advantage_stats: Option<(f32, f32)>,
}

impl RowShare {
    pub const WHOLE: RowShare = RowShare { fraction: 1.0, advantage_stats: None };
}

/// Splits a minibatch of `rows` rows into at most `threads` contiguous, non-empty shards, about
/// equal. The first `aux_cut` rows (those the auxiliary loss sees, coupled by its contrastive
/// terms) stay in the first shard, which also computes the auxiliary loss.
pub fn loss_shards(rows: usize, aux_cut: usize, threads: usize) -> Vec<Range<usize>> {
    let threads = threads.clamp(1, rows.max(1));
    let even = rows.div_ceil(threads);
    let first = even.max(aux_cut).min(rows);
    let mut shards = Vec::with_capacity(threads);
    shards.push(0..first);
    let rest = rows - first;
    let others = (threads - 1).min(rest);
    let mut start = first;
    for k in 0..others {
        let len = rest / others + usize::from(k < rest % others);
        shards.push(start..start + len);
        start += len;
    }
    shards
}

/// The combined loss and its parts (scalars `[1]`, still in the graph).
pub struct PpoLoss<B: Backend> {
    /// `policy + vf_coef * value - ent_coef * entropy + aux_weight * aux`.
    pub total: Tensor<B, 1>,
    pub policy: Tensor<B, 1>,
    pub value: Tensor<B, 1>,
    pub entropy: Tensor<B, 1>,
    /// The auxiliary loss (zero when off or when fewer than 2 complete rows).
    pub aux: Tensor<B, 1>,
    /// Detached diagnostics: approximate KL (CleanRL's `(ratio - 1) - log ratio`) and the
    /// fraction of clipped ratios.
    pub approx_kl: Tensor<B, 1>,
    pub clip_fraction: Tensor<B, 1>,
    /// The cross-modal consistency term (`ppo.consistency_weight`; zero when off).
    pub consistency: Tensor<B, 1>,
    pub aux_report: Option<M3ixupReport>,
}

impl<B: AutodiffBackend> PpoLoss<B> {
    /// total, policy, value, entropy, aux, approx_kl, clip_fraction, consistency, read back in
    /// one transfer.
    pub fn parts(&self) -> Vec<f32> {
        let parts = [
            &self.total,
            &self.policy,
            &self.value,
            &self.entropy,
            &self.aux,
            &self.approx_kl,
            &self.clip_fraction,
            &self.consistency,
        ];
        Tensor::cat(parts.iter().map(|t| (*t).clone().inner()).collect(), 0)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 losses")
    }

    /// `Some(description)` when a loss among [`Self::parts`] (not the diagnostics) is NaN or
    /// infinite.
    pub fn not_finite(parts: &[f32]) -> Option<String> {
        parts[..5].iter().chain(&parts[7..8]).any(|v| !v.is_finite()).then(|| {
            format!(
                "total {}, policy {}, value {}, entropy {}, aux {}, consistency {}",
                parts[0], parts[1], parts[2], parts[3], parts[4], parts[7]
            )
        })
    }
}

/// The combined PPO + auxiliary loss of one minibatch (module docs: which loss trains what).
/// `draws` are the mixup draws for the rows the auxiliary loss sees: the first
/// `draws.perm.len()` complete rows (`ppo.aux_rows`).
pub fn ppo_loss<B: AutodiffBackend>(
    agent: &ActorCritic<B>,
    mb: &Minibatch<B>,
    ppo: &PpoSection,
    aux: &M3ixupLossConfig,
    draws: Option<MixupDraws>,
) -> PpoLoss<B> {
    ppo_loss_of_share(agent, mb, ppo, aux, draws, RowShare::WHOLE)
}

/// [`ppo_loss`] of a shard of a minibatch (see [`RowShare`]); the auxiliary loss, when `draws`
/// are given, is that of the shard's rows alone and is not scaled.
pub fn ppo_loss_of_share<B: AutodiffBackend>(
    agent: &ActorCritic<B>,
    mb: &Minibatch<B>,
    ppo: &PpoSection,
    aux: &M3ixupLossConfig,
    draws: Option<MixupDraws>,
    share: RowShare,
) -> PpoLoss<B> {
    let aux_on = draws.is_some() && LossTerm::ALL.iter().any(|&t| aux.enabled(t));
    let consistency_on = ppo.consistency_weight > 0.0 && agent.encoder.num_modalities() > 1;
    let all_complete = mb.complete_obs.is_none();
    // The consistency term on every row reads the data the dropout kept (`consistency_rows`).
    let every_row = consistency_on && ppo.consistency_rows == ConsistencyRows::All;
    // One trunks' pass over the complete rows (h_u, h_M, z_M = g(h_M)) serves the auxiliary
    // loss, the consistency term and, when every row is complete, the heads (the representation
    // is then z_M, or h_M). With `every_row` the pass covers every row, all being complete for
    // the consistency term, and the heads read each row by its presence.
    let (repr, complete) = if (all_complete && (aux_on || consistency_on)) || every_row {
        let feats = agent.encoder.features(&mb.obs);
        let z_m = agent.encoder.project(feats.joint.clone());
        let repr = match all_complete {
            true => agent.joint_representation(&feats.joint, &z_m),
            false => agent.representation_by_presence(&feats, &z_m, &mb.presence),
        };
        (repr, Some((feats, z_m)))
    } else {
        let repr = agent.representation(&mb.obs, &mb.presence);
        let rows = mb.complete_obs.as_ref().map_or(0, |c| c.batch_size());
        let needed = (aux_on && rows >= 2) || (consistency_on && rows >= 1);
        // Without the consistency term only the auxiliary loss's rows need the pass.
        let wanted = match &draws {
            Some(d) if !consistency_on => d.perm.len().min(rows),
            _ => rows,
        };
        let complete = mb.complete_obs.as_ref().filter(|_| needed).map(|complete| {
            let feats = if wanted < rows {
                agent.encoder.features(&complete.first_rows(wanted))
            } else {
                agent.encoder.features(complete)
            };
            let z_m = agent.encoder.project(feats.joint.clone());
            (feats, z_m)
        });
        (repr, complete)
    };
    let consistency_sum = match &complete {
        Some((feats, z_m)) if consistency_on => Some(cross_modal_consistency(agent, feats, z_m)),
        _ => None,
    };
    let aux_out = match (complete, draws) {
        (Some((feats, z_m)), Some(draws)) if aux_on => {
            let rows = draws.perm.len();
            let (feats, z_m) = if every_row && !all_complete {
                // The auxiliary loss's rows are the first complete ones among every row's.
                let complete: Vec<i64> = (0..mb.presence.batch())
                    .filter(|&k| mb.presence.complete(k))
                    .take(rows)
                    .map(|k| k as i64)
                    .collect();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(complete, [rows]), &z_m.device());
                (feats.select(idx.clone()), z_m.select(0, idx))
            } else if rows < z_m.dims()[0] {
                (feats.first_rows(rows), z_m.narrow(0, 0, rows))
            } else {
                (feats, z_m)
            };
            Some(m3ixup_loss_on_features(&agent.encoder, feats, z_m, aux, draws))
        }
        _ => None,
    };
    let heads = agent.heads(repr);
    let (log_prob, entropy) = agent.log_prob_entropy(heads.policy, mb.actions.clone());

    let mut adv = mb.advantages.clone();
    match share.advantage_stats {
        Some((mean, std)) if ppo.norm_adv => adv = adv.sub_scalar(mean).div_scalar(std + 1e-8),
        None if ppo.norm_adv && adv.dims()[0] > 1 => {
            let mean = adv.clone().mean();
            let std = adv.clone().var(0).sqrt();
            adv = (adv - mean).div(std.add_scalar(1e-8));
        }
        _ => {}
    }
    // A shard's row means, scaled to its part of the minibatch's mean (the whole: unchanged).
    let of_share = |mean: Tensor<B, 1>| if share.fraction == 1.0 { mean } else { mean.mul_scalar(share.fraction) };
    let log_ratio = log_prob - mb.old_log_probs.clone();
    let ratio = log_ratio.clone().exp();
    let clip = ppo.clip_coef as f32;
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.neg() * ratio.clone().clamp(1.0 - clip, 1.0 + clip);
    let policy = of_share(pg1.max_pair(pg2).mean());

    let v = heads.value;
    let value = if ppo.clip_vloss {
        let unclipped = (v.clone() - mb.returns.clone()).square();
        let v_clipped = mb.old_values.clone() + (v - mb.old_values.clone()).clamp(-clip, clip);
        let clipped = (v_clipped - mb.returns.clone()).square();
        of_share(unclipped.max_pair(clipped).mean()).mul_scalar(0.5)
    } else {
        of_share((v - mb.returns.clone()).square().mean()).mul_scalar(0.5)
    };
    let entropy = of_share(entropy.mean());
    let device = policy.device();
    let (aux_loss, aux_report) = match aux_out {
        Some((loss, report)) => (loss, Some(report)),
        None => (Tensor::zeros([1], &device), None),
    };
    // A mean over the minibatch's rows, those missing a modality adding 0.
    let consistency = match consistency_sum {
        Some(sum) => of_share(sum.div_scalar(mb.presence.batch() as f32)),
        None => Tensor::zeros([1], &device),
    };
    let total = policy.clone() + value.clone().mul_scalar(ppo.vf_coef) - entropy.clone().mul_scalar(ppo.ent_coef)
        + aux_loss.clone().mul_scalar(ppo.aux_weight)
        + consistency.clone().mul_scalar(ppo.consistency_weight);

    let ratio_d = ratio.detach();
    let approx_kl = of_share(((ratio_d.clone() - 1.0) - log_ratio.detach()).mean());
    let clip_fraction = of_share((ratio_d - 1.0).abs().greater_elem(clip).float().mean());
    PpoLoss { total, policy, value, entropy, aux: aux_loss, approx_kl, clip_fraction, consistency, aux_report }
}

/// The cross-modal consistency term summed over the rows of `feats` (rows whose every
/// modality's data is known; `z_m = g(h_M)`), `[1]`: for each modality u, KL(pi(every
/// modality) || pi(u alone)), the first held fixed, summed over the modalities. A modality alone is represented as the encoder's
/// fallback represents a row where it is the only one present ([`ActorCritic::representation`]).
fn cross_modal_consistency<B: AutodiffBackend>(
    agent: &ActorCritic<B>,
    feats: &Features<B>,
    z_m: &Tensor<B, 2>,
) -> Tensor<B, 1> {
    let teacher = agent.actor.forward(agent.joint_representation(&feats.joint, z_m)).detach();
    feats
        .unimodal
        .iter()
        .map(|h_u| {
            let alone = agent.actor.forward(agent.representation_of_features(h_u.clone()));
            agent.policy_kl(teacher.clone(), alone).sum()
        })
        .reduce(|a, b| a + b)
        .expect("an encoder has one modality at least")
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Writes `checkpoints/update-NNNNNN/` (agent, optimiser, state) through the harness.
fn save_checkpoint<B: AutodiffBackend, O: Optimizer<ActorCritic<B>, B>>(
    harness: &mut Harness,
    agent: &ActorCritic<B>,
    optim: &O,
    loop_state: &PpoLoopState,
) -> Result<PathBuf, PpoError> {
    let rel = format!("checkpoints/update-{:06}", harness.state.update);
    let dir = harness.run().file(&rel);
    let agent_bytes = record_bytes(agent.clone().into_record(), &dir.join(AGENT_FILE))?;
    let optim_bytes = record_bytes(optim.to_record(), &dir.join(OPTIMIZER_FILE))?;
    let loop_bytes = loop_state_bytes(loop_state, &dir.join(LOOP_STATE_FILE))?;
    harness.checkpoint(&rel, &[(AGENT_FILE, agent_bytes), (OPTIMIZER_FILE, optim_bytes), (LOOP_STATE_FILE, loop_bytes)])
}

/// What a PPO checkpoint keeps of the loop besides weights and optimiser, so that a resumed run
/// continues exactly (every other draw is seeded per update): the environments, mid-episode
/// (`None` when they cannot save their state), and the returns the progress bar averages.
#[derive(Serialize, Deserialize)]
struct PpoLoopState {
    envs: Option<VecEnvState>,
    recent_returns: RecentReturns,
}

/// The returns of the episodes that ended in the last 10 updates (what the progress bar and the
/// run's summary average).
#[derive(Clone, Default, Serialize, Deserialize)]
struct RecentReturns(VecDeque<(usize, f64)>);

impl RecentReturns {
    fn add(&mut self, update: usize, returns: &[f64]) {
        self.0.extend(returns.iter().map(|&r| (update, r)));
        while self.0.front().is_some_and(|&(u, _)| u + 10 <= update) {
            self.0.pop_front();
        }
    }

    /// NaN when no episode ended.
    fn mean(&self) -> f64 {
        if self.0.is_empty() {
            f64::NAN
        } else {
            self.0.iter().map(|&(_, r)| r).sum::<f64>() / self.0.len() as f64
        }
    }
}

/// Builds the agent of a checkpoint from its config and loads its weights.
pub fn load_agent<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ActorCritic<B>, CheckpointState, PpoConfig), PpoError> {
    let state = load_checkpoint_state(dir)?;
    let config: PpoConfig = toml::from_str(&state.config)
        .map_err(|e| PpoError::Checkpoint { path: dir.join(STATE_FILE), reason: format!("its config: {e}") })?;
    let agent = config.policy.init::<B>(&config.encoder, &state.observation_space, &state.action_space, device)?;
    let agent = load_module(agent, &dir.join(AGENT_FILE), state.checksums.get(AGENT_FILE), device)?;
    Ok((agent, state, config))
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// Trains PPO (+ the auxiliary loss) as configured, writing metrics and checkpoints to `run`.
pub fn train<B: AutodiffBackend>(
    config: &PpoConfig,
    run: &RunDir,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<TrainSummary, PpoError> {
    config.validate()?;
    let config_text = toml::to_string_pretty(config).map_err(|e| PpoError::config("(config)", e.to_string()))?;
    let (r, p) = (&config.rollout, &config.ppo);
    let aux = config.aux_loss()?;
    let aux_on = LossTerm::ALL.iter().any(|&t| aux.enabled(t));
    let aux_terms: Vec<LossTerm> = LossTerm::ALL.into_iter().filter(|&t| aux.enabled(t)).collect();
    let batch_size = config.batch_size();
    let num_updates = config.num_updates();

    // 1. Seeding: the root seed drives the network initialisation (the backend's one RNG),
    // the environments, and (per update, so a resumed run draws the same) actions, minibatch
    // order and mixup draws.
    let seed = config.train.seed;
    B::seed(device, seed);

    // 2. Environments: sub-environment i gets seed + i.
    let vec_config = VecEnvConfig { num_envs: r.num_envs, workers: r.workers, seed, ..VecEnvConfig::default() };
    let (name, params) = (config.env.name.clone(), config.env.params.clone());
    let mut envs = VecEnv::new(vec_config, move |_| make(&name, &params))?;
    let obs_space = envs.observation_space().clone();
    let action_space = envs.action_space().clone();
    let action_width = match &action_space {
        ActionSpace::Box { low, .. } => low.len(),
        ActionSpace::Discrete(_) => 1,
    };

    // 3. Agent and optimiser: fresh, or from the last checkpoint (the harness finds it, checks
    // its config, reopens the metrics and continues the run's clock).
    let mut agent = config.policy.init::<B>(&config.encoder, &obs_space, &action_space, device)?;
    let mut optim = AdamConfig::new().with_epsilon(1e-5).init::<B, ActorCritic<B>>();
    let state =
        CheckpointState::fresh(&config.algo, &config.env.name, obs_space.clone(), action_space.clone(), config_text);
    let progress = Progress { verbose: options.verbose, total: num_updates as u64 * batch_size as u64, unit: "steps" };
    let (mut harness, checkpoint) = Harness::open(run, state, progress, config.train.tensorboard, STEP_KEY, options)?;
    let mut resumed_loop = None;
    if let Some(dir) = checkpoint {
        let (loaded, saved, _) = load_agent::<B>(&dir, device)?;
        agent = loaded;
        let optim_file = dir.join(OPTIMIZER_FILE);
        optim = optim.load_record(load_record(&optim_file, saved.checksums.get(OPTIMIZER_FILE), device)?);
        resumed_loop = load_saved_state::<PpoLoopState>(&dir, &saved, LOOP_STATE_FILE)?;
    }
    let (start_update, mut global_step) = (harness.state.update, harness.state.global_step);
    let mut last_checkpoint = start_update;

    // A resumed run continues its episodes where the checkpoint left them. Environments that
    // cannot save their state restart theirs, from a seed of the update's own.
    let (mut obs, mut recent_returns) = match resumed_loop {
        Some(PpoLoopState { envs: Some(saved_envs), recent_returns }) => {
            (envs.restore_state(&saved_envs)?.clone(), recent_returns)
        }
        _ => {
            if start_update > 0 {
                harness.note_fresh_episodes(&config.env.name);
            }
            let reset_seed =
                seed.wrapping_add((start_update as u64).wrapping_mul(r.num_envs as u64).wrapping_mul(1_000_003));
            (envs.reset(Some(reset_seed))?.clone(), RecentReturns::default())
        }
    };
    let mut rollout = Rollout::new(&obs_space, r.steps, r.num_envs, action_width);
    let mut cpu_policy: Option<ActorCritic<Flex>> = None;

    let last_update = match options.max_updates {
        Some(m) => num_updates.min(start_update + m),
        None => num_updates,
    };

    let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    for update in start_update + 1..=last_update {
        let update_start = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed ^ (update as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let lr = if p.anneal_lr {
            p.learning_rate * (1.0 - (update - 1) as f64 / num_updates as f64)
        } else {
            p.learning_rate
        };
        let step_ppo = PpoSection { aux_weight: p.aux_weight_at(update, num_updates), ..p.clone() };

        // 4. Rollout: one forward pass of the current policy per vector step, on the learner's
        // device or on a CPU copy (`rollout.inference`).
        let policy = match r.inference.resolve::<B>(device) {
            InferenceDevice::Learner | InferenceDevice::Auto => RolloutPolicy::Learner(agent.valid(), device.clone()),
            InferenceDevice::Cpu => {
                RolloutPolicy::Cpu(cpu_copy(&agent, cpu_policy.take(), config, &obs_space, &action_space)?)
            }
        };
        let log_std = agent.log_std_values();
        let (episode_returns, episode_lengths) =
            collect_rollout(&policy, &mut envs, &mut obs, &mut rollout, r.steps, &log_std, &mut rng)?;
        global_step += batch_size as u64;
        harness.state.global_step = global_step;
        let rollout_seconds = update_start.elapsed().as_secs_f64();

        // 5. GAE, bootstrapping from V(s_T) for the episodes still running.
        let (last_values, _) = policy.outputs(&obs_space, &obs);
        if let RolloutPolicy::Cpu(copy) = policy {
            cpu_policy = Some(copy); // its modules are reused by the next update's copy
        }
        let scaled: Vec<f32> = rollout.rewards.iter().map(|&x| x * p.reward_scale as f32).collect();
        let adv = gae(
            &scaled,
            &rollout.values,
            &rollout.terminated,
            &rollout.truncated,
            &rollout.truncation_values,
            &last_values,
            p.gamma as f32,
            p.gae_lambda as f32,
        );

        // 6. Minibatch epochs, one combined loss and one backward pass per minibatch. The
        // rollout moves to the learner's device once (pixels as u8); minibatches are row
        // selections there.
        let learn_start = Instant::now();
        let on_device = DeviceRollout::<B>::upload(&rollout, &adv.advantages, &adv.returns, device);
        let mut indices: Vec<usize> = (0..batch_size).collect();
        let mut sums = LossSums::default();
        let mut stopped_early = false;
        for epoch in 1..=p.update_epochs {
            indices.shuffle(&mut rng);
            for (k, mb_idx) in minibatches(&indices, p.minibatch_size).enumerate() {
                if aux_on && mb_idx.len() < 2 {
                    continue; // a contrastive loss needs two rows (only a 1-transition batch has fewer)
                }
                let complete_rows = mb_idx.iter().filter(|&&i| rollout.obs.complete(i)).count();
                let aux_rows = if p.aux_rows == 0 { complete_rows } else { complete_rows.min(p.aux_rows) };
                let draws =
                    (aux_on && aux_rows >= 2).then(|| MixupDraws::sample(&mut rng, aux_rows, obs_space.len(), &aux));
                let learned = on_device.minibatch_gradients(
                    &agent,
                    &rollout,
                    mb_idx,
                    options.learner_threads,
                    &step_ppo,
                    &aux,
                    draws,
                );
                let (mut grads, parts, aux_report) = learned;
                if let Some(parts) = PpoLoss::<B>::not_finite(&parts) {
                    return Err(PpoError::Diverged { update, epoch, minibatch: k + 1, parts, last_checkpoint });
                }
                let grad_norm = clip_grad_norm(&agent, &mut grads, p.max_grad_norm);
                agent = optim.step(lr, agent, grads);
                sums.add(&parts, grad_norm, aux_report.as_ref());
            }
            if p.target_kl > 0.0 && sums.last_epoch_kl() > p.target_kl {
                stopped_early = true;
                break;
            }
            sums.end_epoch();
        }
        let learn_seconds = learn_start.elapsed().as_secs_f64();

        // 7. Metrics, checkpoint, progress.
        recent_returns.add(update, &episode_returns);
        let reward_per_step = rollout.rewards.iter().map(|&x| x as f64).sum::<f64>() / rollout.len() as f64;
        let y_var = variance(&adv.returns);
        let residual: Vec<f32> = adv.returns.iter().zip(&rollout.values).map(|(r, v)| r - v).collect();
        let explained_variance = if y_var == 0.0 { f64::NAN } else { 1.0 - variance(&residual) / y_var };
        let sps = harness.sps();
        let mut row: Vec<(String, f64)> = vec![
            ("global_step".into(), global_step as f64),
            ("update".into(), update as f64),
            ("charts/episodic_return".into(), mean(&episode_returns)),
            ("charts/episodic_length".into(), mean(&episode_lengths)),
            ("charts/episodes".into(), episode_returns.len() as f64),
            ("charts/reward_per_step".into(), reward_per_step),
            ("charts/learning_rate".into(), lr),
            ("charts/log_std".into(), log_std.iter().map(|&x| x as f64).sum::<f64>() / log_std.len().max(1) as f64),
        ];
        if aux_on {
            row.push(("charts/aux_weight".into(), step_ppo.aux_weight));
        }
        row.extend(sums.metrics(&aux_terms));
        row.push(("losses/explained_variance".into(), explained_variance));
        row.push(("losses/stopped_early".into(), stopped_early as u8 as f64));
        row.push(("time/sps".into(), sps));
        row.push(("time/rollout_seconds".into(), rollout_seconds));
        row.push(("time/learn_seconds".into(), learn_seconds));
        harness.log(row)?;

        harness.state.update = update;
        let stopping = update == last_update || harness.stop_requested();
        if update % config.train.checkpoint_every == 0 || stopping {
            let loop_state = PpoLoopState { envs: envs.save_state()?, recent_returns: recent_returns.clone() };
            save_checkpoint(&mut harness, &agent, &optim, &loop_state)?;
            last_checkpoint = update;
        }
        harness.bar.set_position(global_step);
        let recent = recent_returns.mean();
        harness.bar.set_message(format!("sps {sps:.0} | reward/step {reward_per_step:.3} | return {recent:.1}"));
        if stopping {
            break;
        }
    }
    let updates = harness.state.update; // where the loop stopped
    Ok(harness.finish(updates, global_step, Some(recent_returns.mean())))
}

/// One rollout of `steps` vector steps with `policy` (step 4 of [`train`]): fills
/// `rollout` (cleared first), advances `obs`, and returns the returns and lengths of the
/// episodes that ended. Truncated episodes get V(final observation), in one batch per step.
fn collect_rollout<B: Backend>(
    policy: &RolloutPolicy<B>,
    envs: &mut VecEnv,
    obs: &mut BatchObs,
    rollout: &mut Rollout,
    steps: usize,
    log_std: &[f32],
    rng: &mut StdRng,
) -> Result<(Vec<f64>, Vec<f64>), PpoError> {
    let (obs_space, action_space) = (envs.observation_space().clone(), envs.action_space().clone());
    let num_envs = envs.num_envs();
    rollout.clear();
    let (mut episode_returns, mut episode_lengths) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let (values, logits) = policy.outputs(&obs_space, obs);
        let chosen = choose_actions(&action_space, &logits, log_std, false, rng);
        rollout.obs.push_batch(obs);
        rollout.actions.extend_from_slice(&chosen.raw);
        rollout.log_probs.extend_from_slice(&chosen.log_prob);
        rollout.values.extend_from_slice(&values);

        let step = envs.step(&chosen.env)?;
        rollout.rewards.extend(step.rewards.iter().map(|&x| x as f32));
        rollout.terminated.extend_from_slice(&step.terminated);
        rollout.truncated.extend_from_slice(&step.truncated);
        let truncated: Vec<usize> = (0..num_envs).filter(|&i| step.truncated[i] && !step.terminated[i]).collect();
        let mut trunc_values = vec![0.0f32; num_envs];
        if !truncated.is_empty() {
            let finals: Vec<_> = truncated
                .iter()
                .map(|&i| step.final_obs[i].clone().expect("a finished episode keeps its final observation"))
                .collect();
            for (&i, v) in truncated.iter().zip(policy.values_of(&obs_space, &finals)?) {
                trunc_values[i] = v;
            }
        }
        rollout.truncation_values.extend_from_slice(&trunc_values);
        for i in (0..num_envs).filter(|&i| step.done(i)) {
            if let Some(&ret) = step.infos[i].get(INFO_EPISODE_RETURN) {
                episode_returns.push(ret);
                episode_lengths.push(step.infos[i].get(INFO_EPISODE_LENGTH).copied().unwrap_or(f64::NAN));
            }
        }
        obs.clone_from(&step.obs);
    }
    Ok((episode_returns, episode_lengths))
}

/// The minibatches of one epoch: `indices` in chunks of `size`, except that a last chunk of a
/// single row joins the one before it. One row has no spread to normalise its advantage by (it
/// would enter the loss unnormalised, tens of times larger than the others) and no pair to
/// contrast.
pub fn minibatches(indices: &[usize], size: usize) -> impl Iterator<Item = &[usize]> {
    let size = size.max(1);
    let mut count = indices.len().div_ceil(size);
    if count > 1 && indices.len() % size == 1 {
        count -= 1;
    }
    (0..count).map(move |k| {
        let end = if k + 1 == count { indices.len() } else { (k + 1) * size };
        &indices[k * size..end]
    })
}

/// The policy a rollout queries (`rollout.inference`): the learner's weights on its device, or
/// a copy on the CPU. One lives per update, so the size gap between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum RolloutPolicy<B: Backend> {
    Learner(ActorCritic<B>, B::Device),
    Cpu(ActorCritic<Flex>),
}

impl<B: Backend> RolloutPolicy<B> {
    /// The values and policy outputs (logits or action means) of a whole vector-environment
    /// batch, on the host: one forward pass.
    fn outputs(&self, space: &ObsSpace, obs: &BatchObs) -> (Vec<f32>, Vec<f32>) {
        fn run<C: Backend>(
            policy: &ActorCritic<C>,
            space: &ObsSpace,
            obs: &BatchObs,
            device: &C::Device,
        ) -> (Vec<f32>, Vec<f32>) {
            let (x, presence) = batch_input::<C>(space, obs, device);
            host_outputs(policy, &x, &presence)
        }
        match self {
            RolloutPolicy::Learner(policy, device) => run(policy, space, obs, device),
            RolloutPolicy::Cpu(policy) => run(policy, space, obs, &Default::default()),
        }
    }

    /// The values of single observations (final observations of truncated episodes).
    fn values_of(&self, space: &ObsSpace, obs: &[Obs]) -> Result<Vec<f32>, PpoError> {
        fn run<C: Backend>(
            policy: &ActorCritic<C>,
            space: &ObsSpace,
            obs: &[Obs],
            device: &C::Device,
        ) -> Result<Vec<f32>, PpoError> {
            let (x, presence) = MultimodalInput::<C>::from_obs(space, obs, device)?;
            Ok(host_outputs(policy, &x, &presence).0)
        }
        match self {
            RolloutPolicy::Learner(policy, device) => run(policy, space, obs, device),
            RolloutPolicy::Cpu(policy) => run(policy, space, obs, &Default::default()),
        }
    }
}

fn host_outputs<C: Backend>(
    policy: &ActorCritic<C>,
    x: &MultimodalInput<C>,
    presence: &Presence,
) -> (Vec<f32>, Vec<f32>) {
    let out = policy.forward(x, presence);
    let values = out.value.into_data().convert::<f32>().to_vec().expect("f32 values");
    let policy = out.policy.into_data().convert::<f32>().to_vec().expect("f32 policy outputs");
    (values, policy)
}

/// The learner's current weights in a CPU (Flex) agent, reusing `previous`'s modules when given.
fn cpu_copy<B: AutodiffBackend>(
    agent: &ActorCritic<B>,
    previous: Option<ActorCritic<Flex>>,
    config: &PpoConfig,
    obs_space: &ObsSpace,
    action_space: &ActionSpace,
) -> Result<ActorCritic<Flex>, PpoError> {
    let cpu = Default::default();
    let target = match previous {
        Some(model) => model,
        None => config.policy.init::<Flex>(&config.encoder, obs_space, action_space, &cpu)?,
    };
    let recorder = CheckpointRecorder::default();
    let bytes = recorder.record(agent.valid().into_record(), ()).expect("an in-memory record cannot fail");
    Ok(target.load_record(recorder.load(bytes, &cpu).expect("a record of the same model loads")))
}

/// A rollout's learning data on the learner's device, uploaded once per update.
struct DeviceRollout<B: Backend> {
    obs: DeviceObs<B>,
    actions: Tensor<B, 2>,
    old_log_probs: Tensor<B, 1>,
    old_values: Tensor<B, 1>,
    advantages: Tensor<B, 1>,
    returns: Tensor<B, 1>,
    /// The advantages on the host too, for shards' per-minibatch statistics.
    host_advantages: Vec<f32>,
    device: B::Device,
}

impl<B: AutodiffBackend> DeviceRollout<B> {
    fn upload(rollout: &Rollout, advantages: &[f32], returns: &[f32], device: &B::Device) -> Self {
        let n = rollout.len();
        let vector = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [n]), device);
        Self {
            obs: DeviceObs::upload(&rollout.obs, device),
            actions: Tensor::from_data(TensorData::new(rollout.actions.clone(), [n, rollout.action_width]), device),
            old_log_probs: vector(&rollout.log_probs),
            old_values: vector(&rollout.values),
            advantages: vector(advantages),
            returns: vector(returns),
            host_advantages: advantages.to_vec(),
            device: device.clone(),
        }
    }

    /// The combined loss's gradients and parts (and the auxiliary loss's report) of the
    /// minibatch `indices`. With `threads > 1` its rows are split into shards ([`loss_shards`]),
    /// each shard's loss and backward pass run on a thread of its own (the first on this one),
    /// and the shards' gradients and parts are summed: the same loss as on one thread, its sums
    /// taken in another order. The auxiliary loss's rows (`draws`) stay in the first shard.
    #[allow(clippy::too_many_arguments)]
    fn minibatch_gradients(
        &self,
        agent: &ActorCritic<B>,
        rollout: &Rollout,
        indices: &[usize],
        threads: usize,
        ppo: &PpoSection,
        aux: &M3ixupLossConfig,
        draws: Option<MixupDraws>,
    ) -> (GradientsParams, Vec<f32>, Option<M3ixupReport>) {
        let learn = |agent: &ActorCritic<B>, mb: Minibatch<B>, draws: Option<MixupDraws>, share: RowShare| {
            let loss = ppo_loss_of_share(agent, &mb, ppo, aux, draws, share);
            let parts = loss.parts();
            (GradientsParams::from_grads(loss.total.backward(), agent), parts, loss.aux_report)
        };
        // The auxiliary loss sees the first `draws.perm.len()` complete rows: they end at `aux_cut`.
        let aux_cut = match &draws {
            Some(d) => indices
                .iter()
                .scan(0, |n, &i| {
                    *n += usize::from(rollout.obs.complete(i));
                    Some(*n)
                })
                .position(|n| n == d.perm.len())
                .map_or(indices.len(), |p| p + 1),
            None => 0,
        };
        let shards = loss_shards(indices.len(), aux_cut, threads);
        if shards.len() == 1 {
            return learn(agent, self.minibatch(rollout, indices), draws, RowShare::WHOLE);
        }
        let adv: Vec<f64> = indices.iter().map(|&i| self.host_advantages[i] as f64).collect();
        let n = adv.len() as f64;
        let mean = adv.iter().sum::<f64>() / n;
        let std = (adv.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(); // unbiased, as burn's var
        let share = |rows: &Range<usize>| RowShare {
            fraction: rows.len() as f32 / indices.len() as f32,
            advantage_stats: Some((mean as f32, std as f32)),
        };
        let batches: Vec<Minibatch<B>> =
            shards.iter().map(|rows| self.minibatch(rollout, &indices[rows.clone()])).collect();
        let mut batches = batches.into_iter();
        let first = batches.next().expect("one shard at least");
        let learn = &learn;
        let mut results = std::thread::scope(|scope| {
            let others: Vec<_> = batches
                .zip(&shards[1..])
                .map(|(mb, rows)| {
                    let share = share(rows);
                    // burn's autodiff merges the graphs of every tensor computed from the same
                    // parameter nodes under one lock, which would serialise the threads; a copy
                    // of the agent (the same parameter ids and values, new nodes) keeps each
                    // shard's graph its own.
                    let copy = ActorCritic::<B>::from_inner(agent.valid());
                    scope.spawn(move || learn(&copy, mb, None, share))
                })
                .collect();
            let mut results = vec![learn(agent, first, draws, share(&shards[0]))];
            for handle in others {
                results.push(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            results
        });
        let (grads, mut parts, report) = results.remove(0);
        let mut accumulator = GradientsAccumulator::<ActorCritic<B>>::new();
        accumulator.accumulate(agent, grads);
        for (grads, more, _) in results {
            accumulator.accumulate(agent, grads);
            for (sum, v) in parts.iter_mut().zip(more) {
                *sum += v;
            }
        }
        (accumulator.grads(), parts, report)
    }

    /// The rows `indices` as a minibatch: one small index upload, row selections on the device.
    fn minibatch(&self, rollout: &Rollout, indices: &[usize]) -> Minibatch<B> {
        let device = &self.device;
        let rows_of = |idx: &[usize]| {
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(idx.iter().map(|&i| i as i64).collect::<Vec<_>>(), [idx.len()]),
                device,
            )
        };
        let rows = rows_of(indices);
        let complete: Vec<usize> = indices.iter().copied().filter(|&i| rollout.obs.complete(i)).collect();
        Minibatch {
            obs: self.obs.select(&rows),
            presence: rollout.obs.presence(indices),
            actions: self.actions.clone().select(0, rows.clone()),
            old_log_probs: self.old_log_probs.clone().select(0, rows.clone()),
            old_values: self.old_values.clone().select(0, rows.clone()),
            advantages: self.advantages.clone().select(0, rows.clone()),
            returns: self.returns.clone().select(0, rows),
            complete_obs: (complete.len() < indices.len()).then(|| self.obs.select(&rows_of(&complete))),
        }
    }
}

fn variance(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n
}

/// Running sums of one update's minibatch figures.
#[derive(Default)]
struct LossSums {
    count: usize,
    parts: [f64; 8],
    grad_norm: f64,
    epoch_kl: f64,
    epoch_count: usize,
    aux: Vec<(String, f64)>,
    aux_count: usize,
}

impl LossSums {
    fn add(&mut self, parts: &[f32], grad_norm: f64, report: Option<&M3ixupReport>) {
        for (s, &v) in self.parts.iter_mut().zip(parts) {
            *s += v as f64;
        }
        self.count += 1;
        self.grad_norm += grad_norm;
        self.epoch_kl += parts[5] as f64;
        self.epoch_count += 1;
        if let Some(report) = report {
            for (key, value) in report.metrics() {
                match self.aux.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, sum)) => *sum += value,
                    None => self.aux.push((key, value)),
                }
            }
            self.aux_count += 1;
        }
    }

    fn last_epoch_kl(&self) -> f64 {
        self.epoch_kl / self.epoch_count.max(1) as f64
    }

    fn end_epoch(&mut self) {
        self.epoch_kl = 0.0;
        self.epoch_count = 0;
    }

    fn metrics(&self, aux_terms: &[LossTerm]) -> Vec<(String, f64)> {
        let n = self.count.max(1) as f64;
        let names = [
            "losses/total",
            "losses/policy",
            "losses/value",
            "losses/entropy",
            "losses/aux",
            "losses/approx_kl",
            "losses/clip_fraction",
            "losses/consistency",
        ];
        let mut out: Vec<(String, f64)> = names.iter().zip(self.parts).map(|(k, s)| (k.to_string(), s / n)).collect();
        out.push(("losses/grad_norm".into(), self.grad_norm / n));
        // Per-term auxiliary losses and mixup draws (`losses/m3ixup_gmc`, `m3ixup/lambda`, ...),
        // the same keys `pretrain` logs; NaN-filled when no minibatch had an auxiliary loss, so
        // the CSV columns are stable.
        let a = self.aux_count.max(1) as f64;
        if self.aux.is_empty() {
            out.extend(aux_terms.iter().map(|t| (format!("losses/m3ixup_{t}"), f64::NAN)));
        } else {
            out.extend(self.aux.iter().map(|(k, s)| (k.clone(), s / a)));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The algorithm, as the registry (`crate::algorithms`) knows it
// ---------------------------------------------------------------------------------------------

/// PPO with the M3ixup auxiliary loss in the same update (`algo = "ppo"`).
pub struct Ppo;

impl Algorithm for Ppo {
    const NAME: &'static str = "ppo";
    type Config = PpoConfig;
    type Agent<B: Backend> = ActorCritic<B>;

    fn train<B: AutodiffBackend>(
        config: &PpoConfig,
        run: &RunDir,
        device: &B::Device,
        options: &TrainOptions,
    ) -> Result<TrainSummary, PpoError> {
        train::<B>(config, run, device, options)
    }

    fn load<B: Backend>(
        dir: &Path,
        device: &B::Device,
    ) -> Result<(ActorCritic<B>, CheckpointState, PpoConfig), PpoError> {
        load_agent::<B>(dir, device)
    }
}

impl AlgorithmConfig for PpoConfig {
    fn validate(&self) -> Result<(), PpoError> {
        PpoConfig::validate(self)
    }

    fn plan(&self) -> Option<String> {
        Some(format!(
            "{} updates of {} transitions ({} environments x {} steps), {} env steps",
            self.num_updates(),
            self.batch_size(),
            self.rollout.num_envs,
            self.rollout.steps,
            self.num_updates() * self.batch_size()
        ))
    }

    fn env(&self) -> &EnvSection {
        &self.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minibatches_cover_every_row_once_and_a_single_leftover_row_joins_the_last() {
        let rows: Vec<usize> = (0..130).collect();
        let sizes = |n: usize, size: usize| minibatches(&rows[..n], size).map(<[usize]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(128, 64), [64, 64]);
        assert_eq!(sizes(129, 64), [64, 65], "one row left over joins the minibatch before it");
        assert_eq!(sizes(130, 64), [64, 64, 2]);
        assert_eq!(sizes(64, 63), [64]);
        assert_eq!(sizes(1, 64), [1], "a single row stays a (one-row) minibatch");
        let flat: Vec<usize> = minibatches(&rows[..129], 64).flatten().copied().collect();
        assert_eq!(flat, rows[..129]);
    }

    #[test]
    fn loss_shards_keep_the_auxiliary_rows_in_the_first_and_spread_the_others_evenly() {
        assert_eq!(loss_shards(256, 128, 2), vec![0..128, 128..256]);
        assert_eq!(loss_shards(256, 0, 2), vec![0..128, 128..256]);
        assert_eq!(loss_shards(256, 200, 2), vec![0..200, 200..256]);
        assert_eq!(loss_shards(256, 32, 3), vec![0..86, 86..171, 171..256]);
        assert_eq!(loss_shards(256, 256, 2), vec![0..256], "all rows in the auxiliary loss: one shard");
        assert_eq!(loss_shards(10, 0, 1), vec![0..10]);
        assert_eq!(loss_shards(2, 0, 4), vec![0..1, 1..2], "never an empty shard");
    }

    #[test]
    fn the_auxiliary_weight_moves_linearly_to_its_final_value_within_its_share_of_the_run_and_bad_values_are_refused() {
        let constant = PpoSection { aux_weight: 0.8, ..PpoSection::default() };
        assert_eq!(constant.aux_weight_at(1, 10), 0.8);
        assert_eq!(constant.aux_weight_at(10, 10), 0.8);
        let annealed = PpoSection { aux_weight: 1.0, aux_weight_final: Some(0.1), ..PpoSection::default() };
        assert_eq!(annealed.aux_weight_at(1, 10), 1.0, "the first update has the initial weight");
        assert!((annealed.aux_weight_at(4, 10) - 0.7).abs() < 1e-12, "a third of the way: 1.0 - 0.9 / 3");
        assert!((annealed.aux_weight_at(10, 10) - 0.1).abs() < 1e-12, "the last update has the final weight");
        assert_eq!(annealed.aux_weight_at(1, 1), 1.0, "a one-update run keeps the initial weight");
        let half = PpoSection { aux_anneal_fraction: 0.5, ..annealed.clone() };
        assert!((half.aux_weight_at(4, 11) - 0.46).abs() < 1e-12, "3/10 of the run, 3/5 of the way: 1.0 - 0.9 * 0.6");
        assert!((half.aux_weight_at(6, 11) - 0.1).abs() < 1e-12, "final at mid-run");
        assert_eq!(half.aux_weight_at(9, 11), half.aux_weight_at(6, 11), "and there afterwards");
        for update in 1..=10 {
            let whole = PpoSection { aux_anneal_fraction: 1.0, ..annealed.clone() };
            assert_eq!(whole.aux_weight_at(update, 10), annealed.aux_weight_at(update, 10), "1 = the whole run");
        }

        let mut config = PpoConfig::default();
        config.ppo.aux_weight_final = Some(-0.5);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ppo.aux_weight_final") && err.contains("-0.5"), "{err}");
        for fraction in [0.0, 1.5, f64::NAN] {
            let mut config = PpoConfig::default();
            config.ppo.aux_anneal_fraction = fraction;
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("ppo.aux_anneal_fraction") && err.contains("outside (0, 1]"), "{err}");
        }
    }

    use crate::representation::storage::ObsBuffer;
    use burn::backend::{Autodiff, Flex};
    use m3ixup_envs::{BatchActions, ModalityData};

    type Ad = Autodiff<Flex>;

    #[test]
    fn auto_inference_keeps_a_cpu_learner_and_moves_others_to_a_cpu_copy() {
        let device = Default::default();
        assert_eq!(InferenceDevice::Auto.resolve::<Ad>(&device), InferenceDevice::Learner);
        assert_eq!(InferenceDevice::Cpu.resolve::<Ad>(&device), InferenceDevice::Cpu, "a choice stays");
        assert_eq!(RolloutConfig::default().inference, InferenceDevice::Auto);
        let parsed: RolloutConfig = toml::from_str("inference = \"auto\"").unwrap();
        assert_eq!(parsed.inference, InferenceDevice::Auto);
    }

    fn scalar(t: &Tensor<Ad, 1>) -> f64 {
        t.clone().into_scalar().elem::<f64>()
    }

    /// A minibatch of 12 real pendulum observations with arbitrary actions and targets; rows
    /// listed in `incomplete` lose their sound (its data kept, as `sensor_dropout.keep_data`).
    fn minibatch_and_agent(incomplete: &[usize]) -> (ActorCritic<Ad>, Minibatch<Ad>, Vec<Vec<f32>>) {
        minibatch_and_agent_clearing(incomplete, false)
    }

    /// [`minibatch_and_agent`], the lost sound's data cleared to zeros when `clear`.
    fn minibatch_and_agent_clearing(
        incomplete: &[usize],
        clear: bool,
    ) -> (ActorCritic<Ad>, Minibatch<Ad>, Vec<Vec<f32>>) {
        let device = Default::default();
        let mut envs = VecEnv::new(VecEnvConfig { num_envs: 12, ..VecEnvConfig::default() }, |_| {
            make("multimodal-pendulum", &toml::Table::new())
        })
        .unwrap();
        envs.reset(Some(4)).unwrap();
        let space = envs.observation_space().clone();
        let action_space = envs.action_space().clone();
        let mut obs = envs.step(&BatchActions::zeros(&action_space, 12)).unwrap().obs.clone();
        for &i in incomplete {
            obs.present[i * 2 + 1] = false;
            if clear {
                let sound = &mut obs.buffers[1];
                let per_env = sound.len() / 12;
                match sound {
                    ModalityData::F32(v) => v[i * per_env..(i + 1) * per_env].fill(0.0),
                    ModalityData::U8(v) => v[i * per_env..(i + 1) * per_env].fill(0),
                }
            }
        }
        let mut store = ObsBuffer::with_capacity(&space, 12);
        store.push_batch(&obs);
        let mut encoder = EncoderConfig::default();
        encoder.pixel_trunk = crate::representation::encoder::PixelTrunk::Small;
        encoder.joint = crate::representation::encoder::JointKind::SharedTrunk;
        let agent = ActorCriticConfig::default().init::<Ad>(&encoder, &space, &action_space, &device).unwrap();
        let idx: Vec<usize> = (0..12).collect();
        let host: Vec<Vec<f32>> = vec![
            (0..12).map(|i| (i as f32 * 0.7).sin()).collect(), // actions
            (0..12).map(|i| -1.0 - 0.1 * i as f32).collect(),  // old log-probs
            (0..12).map(|i| 0.3 * (i as f32).cos()).collect(), // old values
            (0..12).map(|i| (i as f32 - 5.5) * 0.2).collect(), // advantages
            (0..12).map(|i| 0.1 * i as f32 - 0.4).collect(),   // returns
        ];
        let t = |v: &Vec<f32>| Tensor::<Ad, 1>::from_data(TensorData::new(v.clone(), [12]), &device);
        let complete: Vec<usize> = idx.iter().copied().filter(|&i| store.complete(i)).collect();
        let (x, presence) = store.batch::<Ad>(&idx, &device);
        let mb = Minibatch {
            obs: x,
            presence,
            actions: t(&host[0]).reshape([12, 1]),
            old_log_probs: t(&host[1]),
            old_values: t(&host[2]),
            advantages: t(&host[3]),
            returns: t(&host[4]),
            complete_obs: (complete.len() < 12).then(|| store.batch::<Ad>(&complete, &device).0),
        };
        (agent, mb, host)
    }

    #[test]
    fn the_combined_loss_is_the_weighted_sum_of_its_independently_computed_parts() {
        let (agent, mb, host) = minibatch_and_agent(&[]);
        let ppo = PpoSection { vf_coef: 0.7, ent_coef: 0.03, aux_weight: 0.2, ..PpoSection::default() };
        let aux = M3ixupLossConfig::default();
        let draws = MixupDraws::sample(&mut StdRng::seed_from_u64(9), 12, 2, &aux);
        let loss = ppo_loss(&agent, &mb, &ppo, &aux, Some(draws.clone()));
        let (total, policy, value, entropy, aux_v) =
            (scalar(&loss.total), scalar(&loss.policy), scalar(&loss.value), scalar(&loss.entropy), scalar(&loss.aux));
        let sum = policy + 0.7 * value - 0.03 * entropy + 0.2 * aux_v;
        assert!((total - sum).abs() < 1e-4 * (1.0 + total.abs()), "{total} vs {sum}");

        // The auxiliary part is the M3ixup loss of the same batch with the same draws.
        let (alone, _) = crate::representation::losses::m3ixup_loss_with_draws(&agent.encoder, &mb.obs, &aux, draws);
        assert!((scalar(&alone) - aux_v).abs() < 1e-4, "{} vs {aux_v}", scalar(&alone));

        // The policy and value parts, on the host from the heads' outputs.
        let out = agent.forward(&mb.obs, &mb.presence);
        let mean: Vec<f32> = out.policy.into_data().to_vec().unwrap();
        let v: Vec<f32> = out.value.into_data().to_vec().unwrap();
        let log_std = agent.log_std_values()[0] as f64;
        let adv: Vec<f64> = host[3].iter().map(|&a| a as f64).collect();
        let m = adv.iter().sum::<f64>() / 12.0;
        let sd = (adv.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 11.0).sqrt(); // unbiased, as burn's var
        let mut pg = 0.0;
        for i in 0..12 {
            let z = (host[0][i] as f64 - mean[i] as f64) / log_std.exp();
            let logp = -0.5 * z * z - log_std - 0.5 * (2.0 * std::f64::consts::PI).ln();
            let ratio = (logp - host[1][i] as f64).exp();
            let a = (adv[i] - m) / (sd + 1e-8);
            pg += (-a * ratio).max(-a * ratio.clamp(0.8, 1.2)) / 12.0;
        }
        assert!((pg - policy).abs() < 1e-4, "{pg} vs {policy}");
        let vl: f64 = (0..12).map(|i| 0.5 * (v[i] as f64 - host[4][i] as f64).powi(2)).sum::<f64>() / 12.0;
        assert!((vl - value).abs() < 1e-4, "{vl} vs {value}");
    }

    #[test]
    fn with_aux_rows_the_auxiliary_loss_is_that_of_the_first_rows_and_the_policy_loss_sees_every_row() {
        let aux = M3ixupLossConfig::default();
        let draws = MixupDraws::sample(&mut StdRng::seed_from_u64(5), 7, 2, &aux);
        for incomplete in [&[][..], &[0, 3][..]] {
            let (agent, mb, _) = minibatch_and_agent(incomplete);
            let ppo = PpoSection::default();
            let all_rows = MixupDraws::sample(&mut StdRng::seed_from_u64(5), 12 - incomplete.len(), 2, &aux);
            let full = ppo_loss(&agent, &mb, &ppo, &aux, Some(all_rows));
            let loss = ppo_loss(&agent, &mb, &ppo, &aux, Some(draws.clone()));
            let complete = mb.complete_obs.clone().unwrap_or_else(|| mb.obs.clone());
            let (alone, _) = crate::representation::losses::m3ixup_loss_with_draws(
                &agent.encoder,
                &complete.first_rows(7),
                &aux,
                draws.clone(),
            );
            assert!((scalar(&alone) - scalar(&loss.aux)).abs() < 1e-4, "{} vs {}", scalar(&alone), scalar(&loss.aux));
            assert!((scalar(&full.aux) - scalar(&loss.aux)).abs() > 1e-4, "the row count changes the loss");
            assert_eq!(scalar(&full.policy), scalar(&loss.policy), "{incomplete:?}: the policy loss sees every row");
            assert_eq!(scalar(&full.value), scalar(&loss.value));
        }
        let mut config = PpoConfig::default();
        config.ppo.minibatch_size = 64;
        config.ppo.aux_rows = 65;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ppo.aux_rows") && err.contains("65") && err.contains("64"), "{err}");
        config.ppo.aux_rows = 1;
        assert!(config.validate().unwrap_err().to_string().contains("ppo.aux_rows"));
        config.ppo.aux_rows = 32;
        config.validate().unwrap();
    }

    /// Per row of the 12-row minibatch, on the host: KL(every sensor || pixels alone) +
    /// KL(every sensor || sound alone), the policy means taken through the encoder's fallback.
    fn kl_to_each_sensor_alone(agent: &ActorCritic<Ad>, mb: &Minibatch<Ad>) -> Vec<f64> {
        let mean_with = |present: [bool; 2]| -> Vec<f64> {
            let presence = Presence::from_rows(&vec![present.to_vec(); 12]);
            let out = agent.forward(&mb.obs, &presence).policy.into_data().to_vec::<f32>().unwrap();
            out.into_iter().map(f64::from).collect()
        };
        let (full, pixels, sound) = (mean_with([true, true]), mean_with([true, false]), mean_with([false, true]));
        let var = (2.0 * agent.log_std_values()[0] as f64).exp();
        (0..12).map(|i| ((pixels[i] - full[i]).powi(2) + (sound[i] - full[i]).powi(2)) / (2.0 * var)).collect()
    }

    #[test]
    fn the_consistency_term_is_the_kl_from_the_complete_policy_to_each_sensor_alone_over_every_row() {
        for incomplete in [&[][..], &[0, 3][..]] {
            let (agent, mb, _) = minibatch_and_agent(incomplete);
            let aux = M3ixupLossConfig::default();
            let draws = MixupDraws::sample(&mut StdRng::seed_from_u64(3), 12 - incomplete.len(), 2, &aux);
            let ppo = PpoSection { consistency_weight: 0.4, ..PpoSection::default() };
            let loss = ppo_loss(&agent, &mb, &ppo, &aux, Some(draws.clone()));
            let off = ppo_loss(&agent, &mb, &PpoSection::default(), &aux, Some(draws));
            assert_eq!(scalar(&off.consistency), 0.0);

            let kl = kl_to_each_sensor_alone(&agent, &mb);
            let expected: f64 = (0..12).filter(|i| !incomplete.contains(i)).map(|i| kl[i]).sum::<f64>() / 12.0;
            let got = scalar(&loss.consistency);
            assert!(expected > 1e-6, "the sensors alone act differently at initialisation");
            assert!((got - expected).abs() < 1e-4 * (1.0 + expected), "{incomplete:?}: {got} vs {expected}");
            let added = scalar(&loss.total) - scalar(&off.total);
            assert!((added - 0.4 * expected).abs() < 1e-4, "{added} vs {}", 0.4 * expected);
            assert_eq!(scalar(&loss.aux), scalar(&off.aux), "the auxiliary loss is unchanged");
            assert_eq!(scalar(&loss.policy), scalar(&off.policy));

            // The complete policy is the teacher, held fixed: f_M's own layer and the log-std get
            // no gradient from the term, each sensor's processor does.
            let grads = loss.consistency.backward();
            assert!(agent.encoder.joint.proj.weight.grad(&grads).is_none());
            assert!(agent.log_std.grad(&grads).is_none());
            let sound_grad = agent.encoder.unimodal[1].proj.weight.grad(&grads).expect("sound alone learns");
            assert!(sound_grad.abs().sum().into_scalar() > 0.0);
        }
        let mut config = PpoConfig::default();
        config.ppo.consistency_weight = -0.1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ppo.consistency_weight") && err.contains("-0.1"), "{err}");
        config.ppo.consistency_weight = 0.5;
        config.env.params.insert("sound".into(), toml::Value::Boolean(false));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ppo.consistency_weight") && err.contains("two sensors"), "{err}");
    }

    #[test]
    fn with_consistency_rows_all_every_row_is_taught_from_the_data_the_dropout_kept() {
        let incomplete = [0, 3];
        let (agent, mb, _) = minibatch_and_agent(&incomplete);
        let aux = M3ixupLossConfig::default();
        let draws = MixupDraws::sample(&mut StdRng::seed_from_u64(3), 10, 2, &aux);
        let complete_rows = PpoSection { consistency_weight: 0.4, ..PpoSection::default() };
        let every_row = PpoSection { consistency_rows: ConsistencyRows::All, ..complete_rows.clone() };
        let loss = ppo_loss(&agent, &mb, &every_row, &aux, Some(draws.clone()));
        let base = ppo_loss(&agent, &mb, &complete_rows, &aux, Some(draws));

        // Every row adds KL(every sensor || each sensor alone), rows 0 and 3 (sound withheld
        // from the agent) included: the teacher reads the sound the dropout kept.
        let per_row = kl_to_each_sensor_alone(&agent, &mb);
        let kl = |i: usize| per_row[i];
        let expected = (0..12).map(kl).sum::<f64>() / 12.0;
        let got = scalar(&loss.consistency);
        assert!((got - expected).abs() < 1e-4 * (1.0 + expected), "{got} vs {expected}");
        let only_complete = (0..12).filter(|i| !incomplete.contains(i)).map(kl).sum::<f64>() / 12.0;
        assert!((scalar(&base.consistency) - only_complete).abs() < 1e-4 * (1.0 + only_complete));
        assert!(got > scalar(&base.consistency), "the withheld rows add to the term");

        // The policy, value and auxiliary losses are those of the complete-rows mode: the heads
        // read each row by its presence, the auxiliary loss sees the same complete rows.
        for (a, b) in [(&loss.policy, &base.policy), (&loss.value, &base.value), (&loss.aux, &base.aux)] {
            assert!((scalar(a) - scalar(b)).abs() < 1e-5, "{} vs {}", scalar(a), scalar(b));
        }
        // ... and the agent never reads the kept data: the same minibatch with the withheld
        // sound cleared gives the same policy and value losses.
        let (_, cleared, _) = minibatch_and_agent_clearing(&incomplete, true);
        let on_cleared = ppo_loss(&agent, &cleared, &complete_rows, &aux, None);
        let on_kept = ppo_loss(&agent, &mb, &complete_rows, &aux, None);
        assert_eq!(scalar(&on_cleared.policy), scalar(&on_kept.policy));
        assert_eq!(scalar(&on_cleared.value), scalar(&on_kept.value));

        // "all" needs the dropout to keep the data.
        let mut config = PpoConfig::default();
        config.ppo.consistency_weight = 1.0;
        config.ppo.consistency_rows = ConsistencyRows::All;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ppo.consistency_rows") && err.contains("keep_data = true"), "{err}");
        config.env.params =
            toml::from_str("sensor_dropout = { mode = \"per-episode\", p = 0.5, keep_data = true }").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn without_an_auxiliary_loss_the_aux_part_is_zero_and_rows_missing_a_sensor_are_left_out_of_it() {
        let (agent, mb, _) = minibatch_and_agent(&[]);
        let ppo = PpoSection::default();
        let mut none = M3ixupLossConfig::default();
        for t in LossTerm::ALL {
            none.set_enabled(t, false);
        }
        let loss = ppo_loss(&agent, &mb, &ppo, &none, None);
        assert_eq!(scalar(&loss.aux), 0.0);
        assert!(loss.aux_report.is_none());

        // Rows 0 and 3 lack their sound: the auxiliary loss sees the other 10 rows only.
        let (agent, mb, _) = minibatch_and_agent(&[0, 3]);
        let aux = M3ixupLossConfig::default();
        let draws = MixupDraws::sample(&mut StdRng::seed_from_u64(2), 10, 2, &aux);
        let loss = ppo_loss(&agent, &mb, &ppo, &aux, Some(draws.clone()));
        let complete = mb.complete_obs.as_ref().unwrap();
        assert_eq!(complete.batch_size(), 10);
        let (alone, _) = crate::representation::losses::m3ixup_loss_with_draws(&agent.encoder, complete, &aux, draws);
        assert!((scalar(&alone) - scalar(&loss.aux)).abs() < 1e-4);
    }
}
