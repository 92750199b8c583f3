//! SAC (Haarnoja et al. 2018, with automatic entropy tuning) whose critic owns the M3ixup
//! encoder, with the M3ixup loss as an auxiliary term: the off-policy counterpart of the PPO
//! agent, in the spirit of CURL (Laskin et al. 2020) and SAC-AE (Yarats et al. 2019).
//!
//! The loop ([`train`]) reads top to bottom: seeding, environments, agent, targets and
//! optimisers, replay buffer; then per vector step one batched forward pass (uniform random
//! actions during the warm-up), a replay write, and `sac.updates_per_step` gradient updates per
//! environment step once the warm-up is over.
//!
//! **Which loss trains what.**
//! - Critic: `mse(Q1, y) + mse(Q2, y) + aux_weight * M3ixup` in one backward pass (the M3ixup
//!   term every `aux_every` updates). It trains the twin Q heads and every encoder parameter:
//!   the encoder learns through the critic and the contrastive loss, as in CURL.
//! - Actor: `mean(alpha * log pi(a|r) - min(Q1, Q2)(r, a))` on the encoder's representation
//!   detached (every `actor_every` updates): trains the actor head alone.
//! - Temperature: `-mean(log_alpha * (log pi + target_entropy))` (detached log pi).
//! - Targets: a Polyak copy of the encoder (`encoder_tau`) and of the Q heads (`critic_tau`),
//!   every `target_every` updates. The target y = r + gamma * (1 - terminated) * (min target Q -
//!   alpha * log pi) at the next observation, whose representation (for the next action and for
//!   the target Q) comes from the target encoder, so one extra encoder pass serves both.
//!   Truncated transitions bootstrap from their final observation; terminated ones do not.
//!
//! **Actions.** A tanh-squashed Gaussian in `[-1, 1]`, scaled to the Box bounds; the log-std is
//! squashed into `[log_std_min, log_std_max]` (SAC-AE). Evaluation acts with `tanh(mean)`.

use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::backend::AutodiffBackend;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{frame_stack, make, ActionSpace, BatchObs, ObsSpace, VecEnv, VecEnvConfig};

use crate::algorithms::actor_critic::{Mlp, PolicyInput};
use crate::algorithms::off_policy::{
    box_width, check_range, start_loop, td_target, to_env_actions, OffPolicyLoop, OffPolicyTrain, ReplaySection,
    RolloutSection, Tally, ACTOR_OPTIMIZER_FILE, CRITIC_OPTIMIZER_FILE, TARGET_FILE,
};
use crate::algorithms::replay::{next_observations, ReplayBuffer};
use crate::algorithms::{Algorithm, AlgorithmConfig};
use crate::infra::checkpoint::{
    load_checkpoint_state, load_module, load_record, record_bytes, CheckpointState, TrainError, AGENT_FILE, STATE_FILE,
};
use crate::infra::harness::{Harness, Progress, TrainOptions, TrainSummary, STEP_KEY};
use crate::infra::optim::soft_update;
use crate::infra::run::RunDir;
use crate::representation::encoder::{EncoderConfig, M3ixupEncoder, Materialize, MultimodalInput, Presence};
use crate::representation::losses::{m3ixup_loss_on_features, LossTerm, M3ixupLossConfig, MixupDraws};
use crate::representation::sections::{EnvSection, LossSection};
use crate::representation::storage::batch_input;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `train` config for `algo = "sac"` (`configs/sac-*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SacConfig {
    /// The algorithm: `"sac"`.
    pub algo: String,
    /// The environment and its parameters.
    pub env: EnvSection,
    /// How many environments are stepped together.
    pub rollout: RolloutSection,
    /// The replay buffer.
    pub replay: ReplaySection,
    /// The M3ixup encoder (owned by the critic).
    pub encoder: EncoderConfig,
    /// The actor and critic heads.
    pub policy: SacHeads,
    /// SAC's hyperparameters.
    pub sac: SacSection,
    /// The auxiliary representation loss (`kind = "m3ixup" | "gmc" | "none"`, then `pretrain`'s
    /// `[loss]` options); its weight is `sac.aux_weight`.
    pub aux: LossSection,
    /// Seeding, budget, logging, checkpoints.
    pub train: OffPolicyTrain,
}

impl Default for SacConfig {
    fn default() -> Self {
        Self {
            algo: "sac".into(),
            env: EnvSection::default(),
            rollout: RolloutSection::default(),
            replay: ReplaySection::default(),
            encoder: EncoderConfig::default(),
            policy: SacHeads::default(),
            sac: SacSection::default(),
            aux: LossSection::default(),
            train: OffPolicyTrain::default(),
        }
    }
}

/// `[policy]` of SAC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SacHeads {
    /// What the heads read: `"features"` (h, the default here: the critic's gradients shape it)
    /// or `"latent"` (z).
    pub policy_input: PolicyInput,
    /// Hidden widths of the actor and of each Q network (ReLU between layers).
    pub hidden: Vec<usize>,
}

impl Default for SacHeads {
    fn default() -> Self {
        Self { policy_input: PolicyInput::Features, hidden: vec![256, 256] }
    }
}

/// `[sac]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SacSection {
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Environment steps with uniform random actions before learning starts.
    pub learning_starts: u64,
    /// Gradient updates per environment step (the update-to-data ratio; fractions accumulate).
    pub updates_per_step: f64,
    /// Discount factor, in [0, 1].
    pub gamma: f64,
    /// Rewards are multiplied by this in the targets (metrics report the environment's own).
    pub reward_scale: f64,
    /// Adam's learning rate for the critic and the encoder.
    pub critic_lr: f64,
    /// Adam's learning rate for the actor.
    pub actor_lr: f64,
    /// Adam's learning rate for log(alpha).
    pub alpha_lr: f64,
    /// The initial temperature alpha (> 0).
    pub init_alpha: f64,
    /// The entropy target; default (absent) `-action_dim`.
    pub target_entropy: Option<f64>,
    /// Polyak rate of the target Q heads.
    pub critic_tau: f64,
    /// Polyak rate of the target encoder.
    pub encoder_tau: f64,
    /// Update the actor and the temperature every this many updates.
    pub actor_every: usize,
    /// Update the targets every this many updates.
    pub target_every: usize,
    /// Weight of the auxiliary (M3ixup or GMC) loss in the critic's loss.
    pub aux_weight: f64,
    /// Add the auxiliary loss every this many updates.
    pub aux_every: usize,
    /// Bounds of the actor's log-std.
    pub log_std_min: f64,
    pub log_std_max: f64,
}

impl Default for SacSection {
    fn default() -> Self {
        Self {
            batch_size: 128,
            learning_starts: 1_000,
            updates_per_step: 0.5,
            gamma: 0.99,
            reward_scale: 1.0,
            critic_lr: 1e-3,
            actor_lr: 1e-3,
            alpha_lr: 1e-4,
            init_alpha: 0.1,
            target_entropy: None,
            critic_tau: 0.01,
            encoder_tau: 0.05,
            actor_every: 2,
            target_every: 2,
            aux_weight: 1.0,
            aux_every: 1,
            log_std_min: -10.0,
            log_std_max: 2.0,
        }
    }
}

impl SacConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.algo != "sac" {
            return Err(TrainError::config("algo", format!("`{}` is not \"sac\"", self.algo)));
        }
        let env = self.env.checked()?;
        box_width(env.action_space(), "sac")?;
        self.rollout.validate()?;
        self.train.validate()?;
        let s = &self.sac;
        if s.batch_size < 2 {
            return Err(TrainError::config("sac.batch_size", format!("{} is less than 2", s.batch_size)));
        }
        if self.replay.capacity < self.rollout.num_envs.max(s.batch_size) {
            return Err(TrainError::config(
                "replay.capacity",
                format!(
                    "{} holds less than one batch ({}) or one step of every environment",
                    self.replay.capacity, s.batch_size
                ),
            ));
        }
        for (field, every) in
            [("sac.actor_every", s.actor_every), ("sac.target_every", s.target_every), ("sac.aux_every", s.aux_every)]
        {
            if every == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        check_range("sac.updates_per_step", s.updates_per_step, 0.0, 64.0, true)?;
        check_range("sac.gamma", s.gamma, 0.0, 1.0, false)?;
        check_range("sac.reward_scale", s.reward_scale, 0.0, f64::MAX, true)?;
        for (field, v) in [
            ("sac.critic_lr", s.critic_lr),
            ("sac.actor_lr", s.actor_lr),
            ("sac.alpha_lr", s.alpha_lr),
            ("sac.init_alpha", s.init_alpha),
        ] {
            check_range(field, v, 0.0, f64::MAX, true)?;
        }
        check_range("sac.critic_tau", s.critic_tau, 0.0, 1.0, true)?;
        check_range("sac.encoder_tau", s.encoder_tau, 0.0, 1.0, true)?;
        check_range("sac.aux_weight", s.aux_weight, 0.0, f64::MAX, false)?;
        let ordered = s.log_std_min.partial_cmp(&s.log_std_max) == Some(std::cmp::Ordering::Less);
        if !ordered || !s.log_std_min.is_finite() || !s.log_std_max.is_finite() {
            return Err(TrainError::config("sac.log_std_min", "log_std_min must be finite and below log_std_max"));
        }
        if let Some(t) = s.target_entropy {
            check_range("sac.target_entropy", t, -1e6, 1e6, false)?;
        }
        if self.policy.hidden.contains(&0) {
            return Err(TrainError::config("policy.hidden", "widths must be positive"));
        }
        self.encoder.validate().map_err(TrainError::in_section("encoder"))?;
        self.aux.checked()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------------------------

/// Two Q networks on `[representation, action]`.
#[derive(Module, Debug)]
pub struct TwinQ<B: Backend> {
    pub q1: Mlp<B>,
    pub q2: Mlp<B>,
}

impl<B: Backend> TwinQ<B> {
    /// `(Q1, Q2)`, each `[N]`.
    pub fn forward(&self, repr: Tensor<B, 2>, actions: Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let x = Tensor::cat(vec![repr, actions], 1);
        let n = x.dims()[0];
        (self.q1.forward_with(x.clone(), relu).reshape([n]), self.q2.forward_with(x, relu).reshape([n]))
    }

    /// `min(Q1, Q2)`, `[N]`.
    pub fn min(&self, repr: Tensor<B, 2>, actions: Tensor<B, 2>) -> Tensor<B, 1> {
        let (q1, q2) = self.forward(repr, actions);
        q1.min_pair(q2)
    }
}

/// The learned parts of SAC: the encoder (trained by the critic and the auxiliary loss), the
/// actor head and the twin Q heads.
#[derive(Module, Debug)]
pub struct SacAgent<B: Backend> {
    pub encoder: M3ixupEncoder<B>,
    /// `repr -> [mean, pre-squash log-std]`, `2 * action_dim` outputs.
    pub actor: Mlp<B>,
    pub critic: TwinQ<B>,
    policy_input_latent: bool,
    log_std_min: f64,
    log_std_max: f64,
}

/// The target copy (no gradients): encoder and Q heads.
#[derive(Module, Debug)]
pub struct SacTarget<B: Backend> {
    pub encoder: M3ixupEncoder<B>,
    pub critic: TwinQ<B>,
}

/// `log(alpha)`, learned.
#[derive(Module, Debug)]
pub struct Temperature<B: Backend> {
    pub log_alpha: Param<Tensor<B, 1>>,
}

impl<B: Backend> Temperature<B> {
    pub fn new(alpha: f64, device: &B::Device) -> Self {
        Self { log_alpha: Param::from_tensor(Tensor::from_floats([alpha.ln() as f32], device)) }
    }

    pub fn alpha(&self) -> f64 {
        self.log_alpha.val().exp().into_scalar().elem::<f64>()
    }
}

/// A sampled (or, for evaluation, the mean) squashed action and its log-probability.
pub struct SquashedSample<B: Backend> {
    /// `tanh(u)`, `[N, A]`, in `[-1, 1]`.
    pub action: Tensor<B, 2>,
    /// `log pi(action)`, `[N]`, with the tanh correction.
    pub log_prob: Tensor<B, 1>,
}

impl SacHeads {
    /// Builds the encoder (from `encoder`) and the heads for these spaces.
    pub fn init<B: Backend>(
        &self,
        encoder: &EncoderConfig,
        sac: &SacSection,
        obs_space: &ObsSpace,
        action_space: &ActionSpace,
        device: &B::Device,
    ) -> Result<SacAgent<B>, TrainError> {
        let width = box_width(action_space, "sac")?;
        let encoder = encoder.init::<B>(obs_space, device)?;
        let repr = match self.policy_input {
            PolicyInput::Latent => encoder.latent_dim(),
            PolicyInput::Features => encoder.feature_dim(),
        };
        let agent = SacAgent {
            encoder,
            actor: Mlp::new(repr, &self.hidden, 2 * width, device),
            critic: TwinQ {
                q1: Mlp::new(repr + width, &self.hidden, 1, device),
                q2: Mlp::new(repr + width, &self.hidden, 1, device),
            },
            policy_input_latent: self.policy_input == PolicyInput::Latent,
            log_std_min: sac.log_std_min,
            log_std_max: sac.log_std_max,
        };
        // Drawn now, in construction order (see ActorCriticConfig::init).
        Ok(agent.map(&mut Materialize))
    }
}

impl<B: Backend> SacAgent<B> {
    /// What the heads read, with the missing-modality rule of [`M3ixupEncoder::encode`].
    pub fn representation(&self, x: &MultimodalInput<B>, presence: &Presence) -> Tensor<B, 2> {
        representation(&self.encoder, self.policy_input_latent, x, presence)
    }

    /// The actor's mean and log-std (squashed into its bounds), each `[N, A]`.
    pub fn actor_outputs(&self, repr: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let out = self.actor.forward_with(repr, relu);
        let [n, two_a] = out.dims();
        let a = two_a / 2;
        let mean = out.clone().slice([0..n, 0..a]);
        let raw = out.slice([0..n, a..two_a]);
        let (lo, hi) = (self.log_std_min, self.log_std_max);
        let log_std = (tanh(raw) + 1.0).mul_scalar(0.5 * (hi - lo)).add_scalar(lo);
        (mean, log_std)
    }

    /// `tanh(mean + std * noise)` and its log-probability; `noise` is `[N, A]` standard normal
    /// (drawn on the host, so a seeded run is the same on every backend).
    pub fn sample(&self, repr: Tensor<B, 2>, noise: Tensor<B, 2>) -> SquashedSample<B> {
        let (mean, log_std) = self.actor_outputs(repr);
        let n = mean.dims()[0];
        let u = mean + log_std.clone().exp() * noise.clone();
        let action = tanh(u);
        // log N(u; mean, std) = -0.5 noise^2 - log_std - 0.5 log(2 pi); minus log(1 - tanh(u)^2).
        let log_2pi = (2.0 * std::f64::consts::PI).ln();
        let gaussian = (noise.square().mul_scalar(-0.5) - log_std).sub_scalar(0.5 * log_2pi);
        let correction = (action.clone().square().neg() + 1.0).add_scalar(1e-6).log();
        let log_prob = (gaussian - correction).sum_dim(1).reshape([n]);
        SquashedSample { action, log_prob }
    }

    /// The deterministic action `tanh(mean)`, `[N, A]`.
    pub fn mean_action(&self, repr: Tensor<B, 2>) -> Tensor<B, 2> {
        tanh(self.actor_outputs(repr).0)
    }

    pub fn action_width(&self) -> usize {
        self.actor.layers.last().map(|l| l.weight.dims()[1] / 2).unwrap_or(0)
    }
}

fn representation<B: Backend>(
    encoder: &M3ixupEncoder<B>,
    latent: bool,
    x: &MultimodalInput<B>,
    presence: &Presence,
) -> Tensor<B, 2> {
    if latent {
        encoder.encode(x, presence)
    } else {
        encoder.encode_features(x, presence)
    }
}

/// Standard normal noise `[n, width]` from `rng`.
fn normal_noise<B: Backend>(n: usize, width: usize, rng: &mut impl Rng, device: &B::Device) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..n * width).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
    Tensor::from_data(TensorData::new(v, [n, width]), device)
}

/// Actions in `[-1, 1]` for a batch of observations (host values, `[N * A]`): sampled, or
/// `tanh(mean)` when `deterministic`.
pub fn act<B: Backend>(
    agent: &SacAgent<B>,
    space: &ObsSpace,
    obs: &BatchObs,
    deterministic: bool,
    rng: &mut impl Rng,
    device: &B::Device,
) -> Vec<f32> {
    let (x, presence) = batch_input::<B>(space, obs, device);
    let repr = agent.representation(&x, &presence);
    let action = if deterministic {
        agent.mean_action(repr)
    } else {
        let n = x.batch_size();
        agent.sample(repr, normal_noise(n, agent.action_width(), rng, device)).action
    };
    action.into_data().convert::<f32>().to_vec().expect("f32 actions")
}

// ---------------------------------------------------------------------------------------------
// One update
// ---------------------------------------------------------------------------------------------

/// The temperature loss `-mean(log_alpha * (log_pi + target_entropy))` (`log_pi` detached).
pub fn temperature_loss<B: Backend>(
    temperature: &Temperature<B>,
    log_pi: Tensor<B, 1>,
    target_entropy: f64,
) -> Tensor<B, 1> {
    let n = log_pi.dims()[0];
    let alpha_term = temperature.log_alpha.val().expand([n]);
    (alpha_term * log_pi.add_scalar(target_entropy)).mean().neg()
}

/// Losses of one update, for the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateReport {
    pub critic: f64,
    pub q_mean: f64,
    pub aux: Option<f64>,
    pub actor: Option<f64>,
    pub alpha_loss: Option<f64>,
    pub entropy: Option<f64>,
}

/// The agent, its target, its temperature and their optimisers: the whole learner state.
pub struct SacLearner<B: AutodiffBackend, OC, OA, OT>
where
    OC: Optimizer<SacAgent<B>, B>,
    OA: Optimizer<SacAgent<B>, B>,
    OT: Optimizer<Temperature<B>, B>,
{
    pub agent: SacAgent<B>,
    pub target: SacTarget<B::InnerBackend>,
    pub temperature: Temperature<B>,
    critic_optim: OC,
    actor_optim: OA,
    alpha_optim: OT,
    pub updates: usize,
}

/// The files of a SAC checkpoint of its own (besides the agent, the targets, the two other
/// optimisers and the loop's: [`crate::algorithms::off_policy`]).
pub const TEMPERATURE_FILE: &str = "temperature.mpk";
pub const ALPHA_OPTIMIZER_FILE: &str = "alpha-optimizer.mpk";

/// Builds the learner: targets are `valid()` copies of the encoder and Q heads.
pub fn learner<B: AutodiffBackend>(
    agent: SacAgent<B>,
    sac: &SacSection,
    device: &B::Device,
) -> SacLearner<B, impl Optimizer<SacAgent<B>, B>, impl Optimizer<SacAgent<B>, B>, impl Optimizer<Temperature<B>, B>> {
    let target = SacTarget { encoder: agent.encoder.valid(), critic: agent.critic.valid() };
    SacLearner {
        agent,
        target,
        temperature: Temperature::new(sac.init_alpha, device),
        critic_optim: AdamConfig::new().init::<B, SacAgent<B>>(),
        actor_optim: AdamConfig::new().init::<B, SacAgent<B>>(),
        alpha_optim: AdamConfig::new().init::<B, Temperature<B>>(),
        updates: 0,
    }
}

impl<B, OC, OA, OT> SacLearner<B, OC, OA, OT>
where
    B: AutodiffBackend,
    OC: Optimizer<SacAgent<B>, B>,
    OA: Optimizer<SacAgent<B>, B>,
    OT: Optimizer<Temperature<B>, B>,
{
    /// The learner's checkpoint files, to be written in `dir`.
    pub fn checkpoint_files(&self, dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>, TrainError> {
        Ok(vec![
            (AGENT_FILE, record_bytes(self.agent.clone().into_record(), &dir.join(AGENT_FILE))?),
            (TARGET_FILE, record_bytes(self.target.clone().into_record(), &dir.join(TARGET_FILE))?),
            (TEMPERATURE_FILE, record_bytes(self.temperature.clone().into_record(), &dir.join(TEMPERATURE_FILE))?),
            (CRITIC_OPTIMIZER_FILE, record_bytes(self.critic_optim.to_record(), &dir.join(CRITIC_OPTIMIZER_FILE))?),
            (ACTOR_OPTIMIZER_FILE, record_bytes(self.actor_optim.to_record(), &dir.join(ACTOR_OPTIMIZER_FILE))?),
            (ALPHA_OPTIMIZER_FILE, record_bytes(self.alpha_optim.to_record(), &dir.join(ALPHA_OPTIMIZER_FILE))?),
        ])
    }

    /// The learner of checkpoint `dir` (written from [`Self::checkpoint_files`] with its update
    /// count), each file checked against the checksum and the shapes the checkpoint recorded.
    pub fn load(self, dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let state = load_checkpoint_state(dir)?;
        let sum = |file: &str| state.checksums.get(file);
        let module = |file: &str| (dir.join(file), sum(file));
        let (agent_path, agent_sum) = module(AGENT_FILE);
        let (target_path, target_sum) = module(TARGET_FILE);
        let (temperature_path, temperature_sum) = module(TEMPERATURE_FILE);
        Ok(Self {
            agent: load_module(self.agent, &agent_path, agent_sum, device)?,
            target: load_module(self.target, &target_path, target_sum, device)?,
            temperature: load_module(self.temperature, &temperature_path, temperature_sum, device)?,
            critic_optim: self.critic_optim.load_record(load_record(
                &dir.join(CRITIC_OPTIMIZER_FILE),
                sum(CRITIC_OPTIMIZER_FILE),
                device,
            )?),
            actor_optim: self.actor_optim.load_record(load_record(
                &dir.join(ACTOR_OPTIMIZER_FILE),
                sum(ACTOR_OPTIMIZER_FILE),
                device,
            )?),
            alpha_optim: self.alpha_optim.load_record(load_record(
                &dir.join(ALPHA_OPTIMIZER_FILE),
                sum(ALPHA_OPTIMIZER_FILE),
                device,
            )?),
            updates: state.update,
        })
    }

    /// One gradient update on a replay batch (module documentation: which loss trains what).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        space: &ObsSpace,
        batch: &crate::algorithms::replay::ReplayBatch,
        sac: &SacSection,
        aux: &M3ixupLossConfig,
        target_entropy: f64,
        rng: &mut impl Rng,
        device: &B::Device,
    ) -> UpdateReport {
        self.updates += 1;
        let n = batch.len();
        let width = self.agent.action_width();
        let latent = self.agent.policy_input_latent;
        let inner = device.clone();
        let alpha = self.temperature.alpha();

        // Target y, without gradients: next representation from the target encoder.
        let (next_x, next_presence) = batch_input::<B::InnerBackend>(space, &batch.next_obs, &inner);
        let next_repr = representation(&self.target.encoder, latent, &next_x, &next_presence);
        let actor = self.agent.valid();
        let next = actor.sample(next_repr.clone(), normal_noise(n, width, rng, &inner));
        let next_q = self.target.critic.min(next_repr, next.action) - next.log_prob.mul_scalar(alpha);
        let y = Tensor::<B, 1>::from_inner(td_target(batch, next_q, sac.gamma, sac.reward_scale));

        // Critic (+ auxiliary loss): one backward pass into the Q heads and the encoder.
        let (x, presence) = batch_input::<B>(space, &batch.obs, device);
        let complete = (0..n).all(|k| presence.complete(k));
        let aux_on =
            LossTerm::ALL.iter().any(|&t| aux.enabled(t)) && complete && self.updates.is_multiple_of(sac.aux_every);
        let (repr, aux_loss) = if aux_on {
            let feats = self.agent.encoder.features(&x);
            let z_m = self.agent.encoder.project(feats.joint.clone());
            let repr = if latent { z_m.clone() } else { feats.joint.clone() };
            let draws = MixupDraws::sample(rng, n, space.len(), aux);
            let (loss, _) = m3ixup_loss_on_features(&self.agent.encoder, feats, z_m, aux, draws);
            (repr, Some(loss))
        } else {
            (self.agent.representation(&x, &presence), None)
        };
        let actions = Tensor::<B, 2>::from_data(TensorData::new(batch.actions.clone(), [n, width]), device);
        let (q1, q2) = self.agent.critic.forward(repr.clone(), actions);
        let q_mean = q1.clone().detach().mean();
        let critic = (q1 - y.clone()).square().mean() + (q2 - y).square().mean();
        let total = match &aux_loss {
            Some(a) => critic.clone() + a.clone().mul_scalar(sac.aux_weight),
            None => critic.clone(),
        };
        let grads = GradientsParams::from_grads(total.backward(), &self.agent);
        self.agent = self.critic_optim.step(sac.critic_lr, self.agent.clone(), grads);
        let mut report = UpdateReport {
            critic: scalar(critic),
            q_mean: scalar(q_mean),
            aux: aux_loss.map(scalar),
            ..UpdateReport::default()
        };

        // Actor and temperature, on the representation detached.
        if self.updates.is_multiple_of(sac.actor_every) {
            let repr = repr.detach();
            let pi = self.agent.sample(repr.clone(), normal_noise(n, width, rng, device));
            let q = self.agent.critic.min(repr, pi.action);
            let actor_loss = (pi.log_prob.clone().mul_scalar(alpha) - q).mean();
            let grads = GradientsParams::from_grads(actor_loss.backward(), &self.agent.actor);
            self.agent = self.actor_optim.step(sac.actor_lr, self.agent.clone(), grads);
            let log_pi = pi.log_prob.detach();
            let alpha_loss = temperature_loss(&self.temperature, log_pi.clone(), target_entropy);
            let grads = GradientsParams::from_grads(alpha_loss.backward(), &self.temperature);
            self.temperature = self.alpha_optim.step(sac.alpha_lr, self.temperature.clone(), grads);
            report.actor = Some(scalar(actor_loss));
            report.alpha_loss = Some(scalar(alpha_loss));
            report.entropy = Some(-scalar(log_pi.mean()));
        }

        // Targets.
        if self.updates.is_multiple_of(sac.target_every) {
            let target = self.target.clone();
            self.target = SacTarget {
                encoder: soft_update(&self.agent.encoder, target.encoder, sac.encoder_tau),
                critic: soft_update(&self.agent.critic, target.critic, sac.critic_tau),
            };
        }
        report
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Builds the agent of a SAC checkpoint from its config and loads its weights.
pub fn load_agent<B: Backend>(
    dir: &std::path::Path,
    device: &B::Device,
) -> Result<(SacAgent<B>, CheckpointState, SacConfig), TrainError> {
    let state = load_checkpoint_state(dir)?;
    let config: SacConfig = toml::from_str(&state.config)
        .map_err(|e| TrainError::Checkpoint { path: dir.join(STATE_FILE), reason: format!("its config: {e}") })?;
    let agent =
        config.policy.init::<B>(&config.encoder, &config.sac, &state.observation_space, &state.action_space, device)?;
    let agent = load_module(agent, &dir.join(AGENT_FILE), state.checksums.get(AGENT_FILE), device)?;
    Ok((agent, state, config))
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// Trains SAC (+ the auxiliary loss) as configured, writing metrics and checkpoints to `run`.
pub fn train<B: AutodiffBackend>(
    config: &SacConfig,
    run: &RunDir,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let config_text = toml::to_string_pretty(config).map_err(|e| TrainError::config("(config)", e.to_string()))?;
    let (s, t) = (&config.sac, &config.train);
    let aux = config.aux.checked()?;
    let aux_terms: Vec<LossTerm> = LossTerm::ALL.into_iter().filter(|&t| aux.enabled(t)).collect();

    // 1. Seeding: the backend's RNG (network initialisation) and one generator (in the loop
    // state) for exploration, replay sampling and mixup draws.
    B::seed(device, t.seed);

    // 2. Environments (sub-environment i: seed + i) and the replay buffer.
    let num_envs = config.rollout.num_envs;
    let vec_config =
        VecEnvConfig { num_envs, workers: config.rollout.workers, seed: t.seed, ..VecEnvConfig::default() };
    let (name, params) = (config.env.name.clone(), config.env.params.clone());
    let mut envs = VecEnv::new(vec_config, move |_| make(&name, &params))?;
    let obs_space = envs.observation_space().clone();
    let action_space = envs.action_space().clone();
    let width = box_width(&action_space, "sac")?;
    let k = if config.replay.share_frames { frame_stack(&config.env.name, &config.env.params)? } else { 1 };
    let mut replay = ReplayBuffer::new(&obs_space, width, num_envs, config.replay.capacity, k)?;
    let target_entropy = s.target_entropy.unwrap_or(-(width as f64));

    // 3. Agent, targets, temperature, optimisers: fresh, or from the last checkpoint with the
    // loop's state (the harness finds it, checks its config, reopens the metrics).
    let agent = config.policy.init::<B>(&config.encoder, s, &obs_space, &action_space, device)?;
    let mut learner = learner(agent, s, device);
    let state =
        CheckpointState::fresh(&config.algo, &config.env.name, obs_space.clone(), action_space.clone(), config_text);
    let progress = Progress { verbose: options.verbose, total: t.total_steps, unit: "steps" };
    let (mut harness, checkpoint) = Harness::open(run, state, progress, t.tensorboard, STEP_KEY, options)?;
    if let Some(dir) = &checkpoint {
        learner = learner.load(dir, device)?;
    }
    let tally = Tally::with_losses(&[
        "losses/critic",
        "losses/q_mean",
        "losses/aux",
        "losses/actor",
        "losses/alpha",
        "charts/entropy",
    ]);
    let fresh = OffPolicyLoop::new(t, tally, 0);
    let start = start_loop(
        &harness,
        checkpoint.as_deref(),
        fresh,
        &mut envs,
        &mut replay,
        &config.replay,
        t.seed,
        s.learning_starts,
    )?;
    let (mut lp, mut obs, learn_from) = (start.state, start.obs, start.learn_from);
    if start.new_episodes {
        replay.reset(&obs)?;
    }
    let mut global_step = harness.state.global_step;
    let stop_at = options.max_updates.map(|m| learner.updates + m);
    while global_step < t.total_steps && stop_at.is_none_or(|m| learner.updates < m) && !harness.stop_requested() {
        // 4. Act: uniform random during the warm-up, then the policy's sample.
        let squashed: Vec<f32> = if global_step < s.learning_starts {
            (0..num_envs * width).map(|_| lp.rng.gen_range(-1.0f32..=1.0)).collect()
        } else {
            act(&learner.agent.valid(), &obs_space, &obs, false, &mut lp.rng, device)
        };
        let step = envs.step(&to_env_actions(&action_space, &squashed))?;
        let next = next_observations(step);
        replay.add(&squashed, &step.rewards, &step.terminated, &step.truncated, &next, &step.obs)?;
        lp.tally.step(step);
        obs.clone_from(&step.obs);
        global_step += num_envs as u64;

        // 5. Learn: updates_per_step per environment step, after the warm-up.
        if global_step >= learn_from {
            lp.owed += num_envs as f64 * s.updates_per_step;
            let update_start = Instant::now();
            while lp.owed >= 1.0 {
                lp.owed -= 1.0;
                let batch = replay.sample(s.batch_size, &mut lp.rng)?;
                let report = learner.update(&obs_space, &batch, s, &aux, target_entropy, &mut lp.rng, device);
                let parts = [report.critic, report.aux.unwrap_or(0.0), report.actor.unwrap_or(0.0)];
                if parts.iter().any(|v| !v.is_finite()) {
                    return Err(TrainError::DivergedAt {
                        global_step,
                        parts: format!("critic {}, aux {}, actor {}", parts[0], parts[1], parts[2]),
                    });
                }
                lp.tally.loss("losses/critic", report.critic);
                lp.tally.loss("losses/q_mean", report.q_mean);
                if let Some(a) = report.aux {
                    lp.tally.loss("losses/aux", a);
                }
                if let (Some(a), Some(l), Some(e)) = (report.actor, report.alpha_loss, report.entropy) {
                    lp.tally.loss("losses/actor", a);
                    lp.tally.loss("losses/alpha", l);
                    lp.tally.loss("charts/entropy", e);
                }
            }
            lp.update_seconds += update_start.elapsed().as_secs_f64();
        }

        // 6. Metrics, checkpoints (and one where --max-updates stops the run), progress.
        harness.state.global_step = global_step;
        if lp.log_due(global_step, t) {
            let mut row =
                vec![("global_step".to_string(), global_step as f64), ("update".to_string(), learner.updates as f64)];
            row.extend(lp.tally.take_row());
            row.push(("charts/alpha".into(), learner.temperature.alpha()));
            row.push(("charts/aux_terms".into(), aux_terms.len() as f64));
            row.push(("time/sps".into(), harness.sps()));
            row.push(("time/update_seconds".into(), lp.update_seconds));
            let reward = row.iter().find(|(k, _)| k == "charts/reward_per_step").map_or(f64::NAN, |(_, v)| *v);
            harness.log(row)?;
            harness.bar.set_message(format!("reward/step {reward:.3} | alpha {:.3}", learner.temperature.alpha()));
        }
        let stopping = stop_at.is_some_and(|m| learner.updates >= m) || harness.stop_requested();
        if lp.checkpoint_due(global_step, t) || stopping {
            harness.state.update = learner.updates;
            let name = format!("checkpoints/step-{global_step:09}");
            let dir = harness.run().file(&name);
            let mut files = learner.checkpoint_files(&dir)?;
            files.extend(lp.checkpoint_files(&dir, &mut envs, &replay, &config.replay)?);
            harness.checkpoint(&name, &files)?;
        }
        harness.bar.set_position(global_step);
    }
    Ok(harness.finish(learner.updates, global_step, None))
}

// ---------------------------------------------------------------------------------------------
// The algorithm, as the registry (`crate::algorithms`) knows it
// ---------------------------------------------------------------------------------------------

/// SAC with the M3ixup auxiliary loss (`algo = "sac"`).
pub struct Sac;

impl Algorithm for Sac {
    const NAME: &'static str = "sac";
    type Config = SacConfig;
    type Agent<B: Backend> = SacAgent<B>;

    fn train<B: AutodiffBackend>(
        config: &SacConfig,
        run: &RunDir,
        device: &B::Device,
        options: &TrainOptions,
    ) -> Result<TrainSummary, TrainError> {
        train::<B>(config, run, device, options)
    }

    fn load<B: Backend>(
        dir: &std::path::Path,
        device: &B::Device,
    ) -> Result<(SacAgent<B>, CheckpointState, SacConfig), TrainError> {
        load_agent::<B>(dir, device)
    }
}

impl AlgorithmConfig for SacConfig {
    fn validate(&self) -> Result<(), TrainError> {
        SacConfig::validate(self)
    }

    fn env(&self) -> &EnvSection {
        &self.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Autodiff<Flex>;

    #[test]
    fn the_temperature_rises_when_entropy_is_below_target_and_falls_when_above() {
        let device = Default::default();
        let sac = SacSection { alpha_lr: 0.1, ..SacSection::default() };
        for (log_pi, rises) in [(vec![1.0f32, 2.0, 0.5], true), (vec![-3.0f32, -2.5, -4.0], false)] {
            let temperature = Temperature::<B>::new(0.1, &device);
            let mean_log_pi = log_pi.iter().sum::<f32>() as f64 / log_pi.len() as f64;
            let log_pi = Tensor::<B, 1>::from_data(TensorData::new(log_pi, [3]), &device);
            let target_entropy = -1.0;
            let loss = temperature_loss(&temperature, log_pi, target_entropy);
            let grads = loss.backward();
            // d loss / d log_alpha = -(mean log_pi + target_entropy), exactly.
            let g: f64 = temperature.log_alpha.val().grad(&grads).unwrap().into_scalar().elem();
            assert!((g + (mean_log_pi + target_entropy)).abs() < 1e-6, "{g}");
            let grads = GradientsParams::from_grads(grads, &temperature);
            let mut optim = AdamConfig::new().init::<B, Temperature<B>>();
            let before = temperature.alpha();
            let after = optim.step(sac.alpha_lr, temperature, grads).alpha();
            // Entropy -mean(log_pi) below the target (-1) -> alpha rises; above -> it falls.
            assert_eq!(after > before, rises, "alpha {before} -> {after}");
        }
    }

    #[test]
    fn squashed_samples_stay_in_bounds_with_the_tanh_corrected_log_probability() {
        let device = Default::default();
        let space =
            ObsSpace::new([("state", m3ixup_envs::ModalitySpec::uniform(&[3], m3ixup_envs::DType::F32, -1.0, 1.0))])
                .unwrap();
        let action_space = ActionSpace::Box { low: vec![-2.0], high: vec![2.0] };
        let heads = SacHeads { hidden: vec![8], ..SacHeads::default() };
        let agent = heads
            .init::<Flex>(&EncoderConfig::default(), &SacSection::default(), &space, &action_space, &device)
            .unwrap();
        let repr = Tensor::<Flex, 2>::random(
            [5, agent.encoder.feature_dim()],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let noise = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.0f32, 0.5, -0.5, 3.0, -3.0], [5, 1]), &device);
        let s = agent.sample(repr.clone(), noise.clone());
        let a: Vec<f32> = s.action.clone().into_data().to_vec().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 1.0));
        // By hand for each row: u = mean + std * eps; log N(u) - log(1 - tanh(u)^2 + 1e-6).
        let (mean, log_std) = agent.actor_outputs(repr);
        let mean: Vec<f32> = mean.into_data().to_vec().unwrap();
        let log_std: Vec<f32> = log_std.into_data().to_vec().unwrap();
        let eps: Vec<f32> = noise.into_data().to_vec().unwrap();
        let lp: Vec<f32> = s.log_prob.into_data().to_vec().unwrap();
        for i in 0..5 {
            let u = mean[i] as f64 + (log_std[i] as f64).exp() * eps[i] as f64;
            let expected = -0.5 * (eps[i] as f64).powi(2)
                - log_std[i] as f64
                - 0.5 * (2.0 * std::f64::consts::PI).ln()
                - (1.0 - u.tanh().powi(2) + 1e-6).ln();
            assert!((lp[i] as f64 - expected).abs() < 1e-3, "row {i}: {} vs {expected}", lp[i]);
            assert!((a[i] as f64 - u.tanh()).abs() < 1e-5);
        }
        assert!(log_std.iter().all(|&l| (-10.0..=2.0).contains(&l)));
    }
}
