//! DDPG (Lillicrap et al. 2016) on a frozen pretrained encoder: the paper's reinforcement-learning
//! protocol (docs/M3IXUP.md section 4), after `pretrain` with the GMC or the M3ixup loss.
//!
//! The encoder of a `pretrain` run is loaded and never trained: each observation becomes its
//! latent (z_M with every modality present; the mean of the present z_u otherwise) once, when
//! it is observed, and the replay buffer stores latents. The actor (256-256, ReLU, tanh output)
//! and the critic (256-256, ReLU, the action joined after the first layer) learn on them with
//! Adam (1e-4 / 1e-3), gamma 0.99 and soft target updates (0.001); exploration adds
//! Ornstein-Uhlenbeck noise whose scale is annealed linearly to `noise_final` over
//! `noise_anneal_steps`, after a warm-up of uniform random actions.
//!
//! **Action scale.** The actor's tanh output is scaled to the action bounds (torque in [-2, 2]
//! on the pendulum). GMC's code left it unscaled, so its controller's effective torque was 1.
//!
//! **Frozen means frozen.** The optimisers only ever see the actor and the critic; the encoder
//! lives outside the trained modules and is saved with each checkpoint as it was loaded (a test
//! compares its parameters with the pretrained ones).

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::backend::AutodiffBackend;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{make, BatchObs, DType, ModalityData, ModalitySpec, ObsSpace, VecEnv, VecEnvConfig};

use crate::algorithms::actor_critic::Mlp;
use crate::algorithms::off_policy::{
    box_width, check_range, start_loop, td_target, to_env_actions, OffPolicyLoop, OffPolicyTrain, ReplaySection,
    RolloutSection, Tally, ACTOR_OPTIMIZER_FILE, CRITIC_OPTIMIZER_FILE, TARGET_FILE,
};
use crate::algorithms::replay::{next_observations, ReplayBuffer};
use crate::algorithms::{Algorithm, AlgorithmConfig};
use crate::infra::checkpoint::{
    checksum, load_checkpoint_state, load_module, load_record, record_bytes, CheckpointState, TrainError, AGENT_FILE,
    STATE_FILE,
};
use crate::infra::harness::{Harness, Progress, TrainOptions, TrainSummary, STEP_KEY};
use crate::infra::optim::soft_update;
use crate::infra::run::RunDir;
use crate::representation::encoder::M3ixupEncoder;
use crate::representation::pretrain::{load_encoder, EncoderMeta, CHECKPOINT_FILE, META_FILE};
use crate::representation::sections::EnvSection;
use crate::representation::storage::batch_input;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `train` config for `algo = "ddpg-frozen"` (`configs/ddpg-frozen-*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpgConfig {
    /// The algorithm: `"ddpg-frozen"`.
    pub algo: String,
    /// The environment and its parameters (its observation space must be the encoder's).
    pub env: EnvSection,
    /// The pretrained encoder.
    pub pretrained: PretrainedSection,
    /// How many environments are stepped together.
    pub rollout: RolloutSection,
    /// The replay buffer (of latents: `share_frames` does not apply).
    pub replay: ReplaySection,
    /// Hidden widths of the actor and the critic.
    pub policy: DdpgHeads,
    /// DDPG's hyperparameters.
    pub ddpg: DdpgSection,
    /// Seeding, budget, logging, checkpoints.
    pub train: OffPolicyTrain,
}

impl Default for DdpgConfig {
    fn default() -> Self {
        Self {
            algo: "ddpg-frozen".into(),
            env: EnvSection::default(),
            pretrained: PretrainedSection::default(),
            rollout: RolloutSection::default(),
            replay: ReplaySection { capacity: 25_000, share_frames: false, ..ReplaySection::default() },
            policy: DdpgHeads::default(),
            ddpg: DdpgSection::default(),
            train: OffPolicyTrain { total_steps: 60_000, ..OffPolicyTrain::default() },
        }
    }
}

/// `[pretrained]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainedSection {
    /// The `pretrain` run directory (holding `encoder.toml` and `encoder.mpk`); a relative path
    /// is taken from the working directory.
    pub path: PathBuf,
}

/// `[policy]` of DDPG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpgHeads {
    /// Hidden widths of the actor (ReLU, tanh output) and of the critic (the action joins the
    /// first hidden layer's output).
    pub hidden: Vec<usize>,
}

impl Default for DdpgHeads {
    fn default() -> Self {
        Self { hidden: vec![256, 256] }
    }
}

/// `[ddpg]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpgSection {
    /// Transitions per gradient update.
    pub batch_size: usize,
    /// Environment steps with uniform random actions before learning starts.
    pub learning_starts: u64,
    /// Gradient updates per environment step.
    pub updates_per_step: f64,
    /// Discount factor, in [0, 1].
    pub gamma: f64,
    /// Adam's learning rate for the actor.
    pub actor_lr: f64,
    /// Adam's learning rate for the critic.
    pub critic_lr: f64,
    /// Polyak rate of both targets.
    pub tau: f64,
    /// Ornstein-Uhlenbeck noise: mean reversion theta and scale sigma (in normalised action
    /// units), with dt = 1.
    pub ou_theta: f64,
    pub ou_sigma: f64,
    /// The noise scale reached at the end of the annealing (a fraction of `ou_sigma`).
    pub noise_final: f64,
    /// Environment steps over which the noise scale goes linearly from 1 to `noise_final`.
    pub noise_anneal_steps: u64,
}

impl Default for DdpgSection {
    fn default() -> Self {
        Self {
            batch_size: 128,
            learning_starts: 1_000,
            updates_per_step: 1.0,
            gamma: 0.99,
            actor_lr: 1e-4,
            critic_lr: 1e-3,
            tau: 0.001,
            ou_theta: 0.15,
            ou_sigma: 0.2,
            noise_final: 0.1,
            noise_anneal_steps: 50_000,
        }
    }
}

impl DdpgConfig {
    /// Checks every value; the error names the field.
    /// Checks the files the config names (the pretrained encoder), apart from [`Self::validate`]
    /// so that a config can be checked on a machine without its runs; `train` calls both before
    /// it makes a run directory.
    pub fn check_inputs(&self) -> Result<(), TrainError> {
        let meta = self.pretrained.path.join(META_FILE);
        if !meta.is_file() {
            return Err(TrainError::config(
                "pretrained.path",
                format!(
                    "{} has no {META_FILE}: give the directory of a `pretrain` run",
                    self.pretrained.path.display()
                ),
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        if self.algo != "ddpg-frozen" {
            return Err(TrainError::config("algo", format!("`{}` is not \"ddpg-frozen\"", self.algo)));
        }
        let env = self.env.checked()?;
        box_width(env.action_space(), "ddpg-frozen")?;
        if self.pretrained.path.as_os_str().is_empty() {
            return Err(TrainError::config("pretrained.path", "is empty: give the directory of a `pretrain` run"));
        }
        self.rollout.validate()?;
        self.train.validate()?;
        let d = &self.ddpg;
        if d.batch_size == 0 {
            return Err(TrainError::config("ddpg.batch_size", "must be at least 1"));
        }
        if self.replay.capacity < self.rollout.num_envs.max(d.batch_size) {
            return Err(TrainError::config(
                "replay.capacity",
                format!(
                    "{} holds less than one batch ({}) or one step of every environment",
                    self.replay.capacity, d.batch_size
                ),
            ));
        }
        check_range("ddpg.updates_per_step", d.updates_per_step, 0.0, 64.0, true)?;
        check_range("ddpg.gamma", d.gamma, 0.0, 1.0, false)?;
        check_range("ddpg.actor_lr", d.actor_lr, 0.0, f64::MAX, true)?;
        check_range("ddpg.critic_lr", d.critic_lr, 0.0, f64::MAX, true)?;
        check_range("ddpg.tau", d.tau, 0.0, 1.0, true)?;
        check_range("ddpg.ou_theta", d.ou_theta, 0.0, 1.0, false)?;
        check_range("ddpg.ou_sigma", d.ou_sigma, 0.0, f64::MAX, false)?;
        check_range("ddpg.noise_final", d.noise_final, 0.0, 1.0, false)?;
        if self.policy.hidden.is_empty() || self.policy.hidden.contains(&0) {
            return Err(TrainError::config("policy.hidden", "needs at least one layer, every width positive"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------------------------

/// Q(z, a): the latent through the first layer, then the action joined.
#[derive(Module, Debug)]
pub struct DdpgCritic<B: Backend> {
    pub first: Linear<B>,
    pub rest: Mlp<B>,
}

impl<B: Backend> DdpgCritic<B> {
    pub fn new(latent: usize, action: usize, hidden: &[usize], device: &B::Device) -> Self {
        Self {
            first: LinearConfig::new(latent, hidden[0]).init(device),
            rest: Mlp::new(hidden[0] + action, &hidden[1..], 1, device),
        }
    }

    /// `[N]`.
    pub fn forward(&self, z: Tensor<B, 2>, actions: Tensor<B, 2>) -> Tensor<B, 1> {
        let h = relu(self.first.forward(z));
        let q = self.rest.forward_with(Tensor::cat(vec![h, actions], 1), relu);
        let n = q.dims()[0];
        q.reshape([n])
    }
}

/// The trained part of DDPG: actor and critic on the frozen encoder's latent.
#[derive(Module, Debug)]
pub struct DdpgHeadsModule<B: Backend> {
    pub actor: Mlp<B>,
    pub critic: DdpgCritic<B>,
}

impl<B: Backend> DdpgHeadsModule<B> {
    /// `tanh(actor(z))`, `[N, A]` in `[-1, 1]`.
    pub fn action(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        tanh(self.actor.forward_with(z, relu))
    }
}

/// A trained controller: the frozen encoder and the heads.
#[derive(Module, Debug)]
pub struct DdpgAgent<B: Backend> {
    pub encoder: M3ixupEncoder<B>,
    pub heads: DdpgHeadsModule<B>,
}

impl<B: Backend> DdpgAgent<B> {
    /// Actions in `[-1, 1]` for a batch of observations (host values, `[N * A]`).
    pub fn act(&self, space: &ObsSpace, obs: &BatchObs, device: &B::Device) -> Vec<f32> {
        let (x, presence) = batch_input::<B>(space, obs, device);
        self.heads
            .action(self.encoder.encode(&x, &presence))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 actions")
    }
}

impl DdpgHeads {
    pub fn init<B: Backend>(&self, latent: usize, action: usize, device: &B::Device) -> DdpgHeadsModule<B> {
        let heads = DdpgHeadsModule {
            actor: Mlp::new(latent, &self.hidden, action, device),
            critic: DdpgCritic::new(latent, action, &self.hidden, device),
        };
        heads.map(&mut crate::representation::encoder::Materialize)
    }
}

/// Latents of a batch of observations as a one-modality batch (`latent`: f32[d], present).
fn latents<B: Backend>(encoder: &M3ixupEncoder<B>, space: &ObsSpace, obs: &BatchObs, device: &B::Device) -> BatchObs {
    let (x, presence) = batch_input::<B>(space, obs, device);
    let z: Vec<f32> = encoder.encode(&x, &presence).into_data().convert::<f32>().to_vec().expect("f32 latents");
    BatchObs { present: vec![true; x.batch_size()], buffers: vec![ModalityData::F32(z)] }
}

/// Loads the `pretrain` run at `path` and checks that it observes `space`.
pub fn load_frozen_encoder<B: Backend>(
    path: &Path,
    space: &ObsSpace,
    device: &B::Device,
) -> Result<(M3ixupEncoder<B>, EncoderMeta), TrainError> {
    let (encoder, meta) = load_encoder::<B>(path, device)?;
    meta.check_space(space)
        .map_err(|reason| TrainError::config("pretrained.path", format!("{}: {reason}", path.display())))?;
    Ok((encoder, meta))
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Builds the controller of a DDPG checkpoint and loads its weights. The checkpoint holds the
/// frozen encoder as a `pretrain` run does (`encoder.mpk` and `encoder.toml`), so
/// [`load_encoder`] reads it.
pub fn load_agent<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(DdpgAgent<B>, CheckpointState, DdpgConfig), TrainError> {
    let state = load_checkpoint_state(dir)?;
    let config: DdpgConfig = toml::from_str(&state.config)
        .map_err(|e| TrainError::Checkpoint { path: dir.join(STATE_FILE), reason: format!("its config: {e}") })?;
    let (encoder, _) = load_encoder::<B>(dir, device)?;
    let width = box_width(&state.action_space, "ddpg-frozen")?;
    let heads = config.policy.init::<B>(encoder.latent_dim(), width, device);
    let heads = load_module(heads, &dir.join(AGENT_FILE), state.checksums.get(AGENT_FILE), device)?;
    Ok((DdpgAgent { encoder, heads }, state, config))
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// Trains DDPG on the frozen encoder as configured, writing metrics and checkpoints to `run`.
pub fn train<B: AutodiffBackend>(
    config: &DdpgConfig,
    run: &RunDir,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let config_text = toml::to_string_pretty(config).map_err(|e| TrainError::config("(config)", e.to_string()))?;
    let (d, t) = (&config.ddpg, &config.train);

    // 1. Seeding: the backend's RNG (network initialisation) and one generator (in the loop
    // state) for exploration and replay sampling.
    B::seed(device, t.seed);

    // 2. Environments, and the frozen encoder (on the inner backend: it never takes gradients).
    let num_envs = config.rollout.num_envs;
    let vec_config =
        VecEnvConfig { num_envs, workers: config.rollout.workers, seed: t.seed, ..VecEnvConfig::default() };
    let (name, params) = (config.env.name.clone(), config.env.params.clone());
    let mut envs = VecEnv::new(vec_config, move |_| make(&name, &params))?;
    let obs_space = envs.observation_space().clone();
    let action_space = envs.action_space().clone();
    let width = box_width(&action_space, "ddpg-frozen")?;
    let (encoder, meta) = load_frozen_encoder::<B::InnerBackend>(&config.pretrained.path, &obs_space, device)?;
    let latent_dim = encoder.latent_dim();
    let latent_space = ObsSpace::new([("latent", ModalitySpec::uniform(&[latent_dim], DType::F32, -1.0, 1.0))])
        .map_err(|e| TrainError::config("pretrained.path", e.to_string()))?;

    // 3. Heads, targets, optimisers; replay of latents. Fresh, or from the last checkpoint with
    // the loop's state (the harness finds it, checks its config, reopens the metrics).
    let mut heads = config.policy.init::<B>(latent_dim, width, device);
    let mut target = heads.valid();
    let mut actor_optim = AdamConfig::new().init::<B, DdpgHeadsModule<B>>();
    let mut critic_optim = AdamConfig::new().init::<B, DdpgHeadsModule<B>>();
    let mut replay = ReplayBuffer::new(&latent_space, width, num_envs, config.replay.capacity, 1)?;
    let state =
        CheckpointState::fresh(&config.algo, &config.env.name, obs_space.clone(), action_space.clone(), config_text);
    let encoder_bytes = record_bytes(encoder.clone().into_record(), &config.pretrained.path.join(CHECKPOINT_FILE))?;
    // The copy's own checksum (the bytes are re-recorded here, not copied from the pretrain run).
    let meta = EncoderMeta { checksum: Some(checksum(&encoder_bytes)), ..meta };
    let meta_text = toml::to_string(&meta).map_err(|e| TrainError::config("pretrained.path", e.to_string()))?;

    let progress = Progress { verbose: options.verbose, total: t.total_steps, unit: "steps" };
    let (mut harness, checkpoint) = Harness::open(run, state, progress, t.tensorboard, STEP_KEY, options)?;
    if let Some(dir) = &checkpoint {
        let saved = load_checkpoint_state(dir)?;
        let file = |name: &str| (dir.join(name), saved.checksums.get(name));
        let ((heads_path, heads_sum), (target_path, target_sum)) = (file(AGENT_FILE), file(TARGET_FILE));
        heads = load_module(heads, &heads_path, heads_sum, device)?;
        target = load_module(target, &target_path, target_sum, device)?;
        let (path, sum) = file(ACTOR_OPTIMIZER_FILE);
        actor_optim = actor_optim.load_record(load_record(&path, sum, device)?);
        let (path, sum) = file(CRITIC_OPTIMIZER_FILE);
        critic_optim = critic_optim.load_record(load_record(&path, sum, device)?);
    }
    let fresh = OffPolicyLoop::new(t, Tally::with_losses(&["losses/critic", "losses/actor"]), num_envs * width);
    let start = start_loop(
        &harness,
        checkpoint.as_deref(),
        fresh,
        &mut envs,
        &mut replay,
        &config.replay,
        t.seed,
        d.learning_starts,
    )?;
    let (mut lp, learn_from) = (start.state, start.learn_from);
    let mut z = latents(&encoder, &obs_space, &start.obs, device);
    if start.new_episodes {
        replay.reset(&z)?;
    }
    let (mut global_step, mut updates) = (harness.state.global_step, harness.state.update);
    let stop_at = options.max_updates.map(|m| updates + m);
    while global_step < t.total_steps && stop_at.is_none_or(|m| updates < m) && !harness.stop_requested() {
        // 4. Act: uniform random during the warm-up, then the actor plus annealed OU noise.
        let squashed: Vec<f32> = if global_step < d.learning_starts {
            (0..num_envs * width).map(|_| lp.rng.gen_range(-1.0f32..=1.0)).collect()
        } else {
            let scale =
                1.0 - (1.0 - d.noise_final) * (global_step as f64 / d.noise_anneal_steps.max(1) as f64).min(1.0);
            let mean: Vec<f32> = heads
                .valid()
                .action(tensor2(&z, latent_dim, device))
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32");
            let rng = &mut lp.rng;
            mean.iter()
                .zip(lp.noise.iter_mut())
                .map(|(&m, n)| {
                    *n += -d.ou_theta * *n + d.ou_sigma * rng.sample::<f64, _>(StandardNormal);
                    (m as f64 + scale * *n).clamp(-1.0, 1.0) as f32
                })
                .collect()
        };
        let step = envs.step(&to_env_actions(&action_space, &squashed))?;
        let next_z = latents(&encoder, &obs_space, &next_observations(step), device);
        let done: Vec<bool> = (0..num_envs).map(|i| step.done(i)).collect();
        z = if done.iter().any(|&x| x) { latents(&encoder, &obs_space, &step.obs, device) } else { next_z.clone() };
        replay.add(&squashed, &step.rewards, &step.terminated, &step.truncated, &next_z, &z)?;
        for (i, _) in done.iter().enumerate().filter(|(_, &x)| x) {
            lp.noise[i * width..(i + 1) * width].fill(0.0); // a fresh noise process per episode
        }
        lp.tally.step(step);
        global_step += num_envs as u64;

        // 5. Learn.
        if global_step >= learn_from {
            lp.owed += num_envs as f64 * d.updates_per_step;
            while lp.owed >= 1.0 {
                lp.owed -= 1.0;
                updates += 1;
                let batch = replay.sample(d.batch_size, &mut lp.rng)?;
                let n = batch.len();
                let inner = device.clone();
                let zs = tensor2::<B>(&batch.obs, latent_dim, device);
                let next = tensor2::<B::InnerBackend>(&batch.next_obs, latent_dim, &inner);
                let actions = Tensor::<B, 2>::from_data(TensorData::new(batch.actions.clone(), [n, width]), device);
                let next_q = target.critic.forward(next.clone(), target.action(next));
                let y = Tensor::<B, 1>::from_inner(td_target(&batch, next_q, d.gamma, 1.0));
                let critic_loss = (heads.critic.forward(zs.clone(), actions) - y).square().mean();
                let grads = GradientsParams::from_grads(critic_loss.backward(), &heads.critic);
                heads = critic_optim.step(d.critic_lr, heads, grads);
                let actor_loss = heads.critic.forward(zs.clone(), heads.action(zs)).mean().neg();
                let grads = GradientsParams::from_grads(actor_loss.backward(), &heads.actor);
                heads = actor_optim.step(d.actor_lr, heads, grads);
                target = soft_update(&heads, target, d.tau);
                let (c, a): (f64, f64) = (critic_loss.into_scalar().elem(), actor_loss.into_scalar().elem());
                if !c.is_finite() || !a.is_finite() {
                    return Err(TrainError::DivergedAt { global_step, parts: format!("critic {c}, actor {a}") });
                }
                lp.tally.loss("losses/critic", c);
                lp.tally.loss("losses/actor", a);
            }
        }

        // 6. Metrics, checkpoints (and one where --max-updates stops the run), progress.
        harness.state.global_step = global_step;
        if lp.log_due(global_step, t) {
            let mut row = vec![("global_step".to_string(), global_step as f64), ("update".to_string(), updates as f64)];
            row.extend(lp.tally.take_row());
            row.push(("time/sps".into(), harness.sps()));
            let reward = row.iter().find(|(k, _)| k == "charts/reward_per_step").map_or(f64::NAN, |(_, v)| *v);
            harness.log(row)?;
            harness.bar.set_message(format!("reward/step {reward:.3}"));
        }
        let stopping = stop_at.is_some_and(|m| updates >= m) || harness.stop_requested();
        if lp.checkpoint_due(global_step, t) || stopping {
            harness.state.update = updates;
            let name = format!("checkpoints/step-{global_step:09}");
            let dir = run.file(&name);
            let mut files = vec![
                (AGENT_FILE, record_bytes(heads.clone().into_record(), &dir.join(AGENT_FILE))?),
                (TARGET_FILE, record_bytes(target.clone().into_record(), &dir.join(TARGET_FILE))?),
                (ACTOR_OPTIMIZER_FILE, record_bytes(actor_optim.to_record(), &dir.join(ACTOR_OPTIMIZER_FILE))?),
                (CRITIC_OPTIMIZER_FILE, record_bytes(critic_optim.to_record(), &dir.join(CRITIC_OPTIMIZER_FILE))?),
                (CHECKPOINT_FILE, encoder_bytes.clone()),
                (META_FILE, meta_text.clone().into_bytes()),
            ];
            files.extend(lp.checkpoint_files(&dir, &mut envs, &replay, &config.replay)?);
            harness.checkpoint(&name, &files)?;
        }
        harness.bar.set_position(global_step);
    }
    Ok(harness.finish(updates, global_step, None))
}

/// A one-modality batch of latents as a `[N, d]` tensor.
fn tensor2<B: Backend>(batch: &BatchObs, d: usize, device: &B::Device) -> Tensor<B, 2> {
    let v = batch.buffers[0].as_f32().expect("latents are f32").to_vec();
    let n = v.len() / d;
    Tensor::from_data(TensorData::new(v, [n, d]), device)
}

// ---------------------------------------------------------------------------------------------
// The algorithm, as the registry (`crate::algorithms`) knows it
// ---------------------------------------------------------------------------------------------

/// DDPG on a frozen pretrained encoder (`algo = "ddpg-frozen"`).
pub struct DdpgFrozen;

impl Algorithm for DdpgFrozen {
    const NAME: &'static str = "ddpg-frozen";
    type Config = DdpgConfig;
    type Agent<B: Backend> = DdpgAgent<B>;

    fn train<B: AutodiffBackend>(
        config: &DdpgConfig,
        run: &RunDir,
        device: &B::Device,
        options: &TrainOptions,
    ) -> Result<TrainSummary, TrainError> {
        train::<B>(config, run, device, options)
    }

    fn load<B: Backend>(
        dir: &Path,
        device: &B::Device,
    ) -> Result<(DdpgAgent<B>, CheckpointState, DdpgConfig), TrainError> {
        load_agent::<B>(dir, device)
    }
}

impl AlgorithmConfig for DdpgConfig {
    fn validate(&self) -> Result<(), TrainError> {
        DdpgConfig::validate(self)
    }

    fn check_inputs(&self) -> Result<(), TrainError> {
        DdpgConfig::check_inputs(self)
    }

    fn env(&self) -> &EnvSection {
        &self.env
    }
}
