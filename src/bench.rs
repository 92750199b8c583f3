//! Throughput measurements behind the `bench` binary. Each figure is measured for a fixed
//! wall-clock budget; ratios compare figures measured in the same process.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use burn::optim::AdamConfig;
use burn::tensor::backend::AutodiffBackend;
use m3ixup_agents::algorithms::ppo::{train, PpoConfig, PpoError};
use m3ixup_agents::infra::harness::TrainOptions;
use m3ixup_agents::infra::run::RunDir;
use m3ixup_agents::representation::pretrain::{train_step, PretrainError, SampleSet};
use m3ixup_agents::{EncoderConfig, M3ixupEncoder, M3ixupLossConfig};
use m3ixup_envs::{make, Action, BatchActions, EnvError, VecEnv, VecEnvConfig};

use crate::device::{BackendJob, DeviceArgs};

/// How many pre-drawn random actions the loops cycle through, so the measurement is of the
/// environment, not of the random-number generator.
const ACTION_POOL: usize = 1024;

/// Env-steps per second of one environment built by name (with its registry wrappers:
/// frame stack, time limit, episode statistics), stepped on the calling thread with uniform
/// random actions; episodes reset as they end.
pub fn single_env_steps_per_sec(name: &str, params: &toml::Table, budget: Duration) -> Result<f64, EnvError> {
    let mut env = make(name, params)?;
    let mut rng = StdRng::seed_from_u64(0);
    let actions: Vec<Action> = (0..ACTION_POOL).map(|_| env.action_space().sample(&mut rng)).collect();
    env.reset(Some(0))?;
    let start = Instant::now();
    let mut steps = 0u64;
    while start.elapsed() < budget {
        // Check the clock every 256 steps: a clock read costs about as much as a step.
        for _ in 0..256 {
            let step = env.step(&actions[steps as usize % ACTION_POOL])?;
            steps += 1;
            if step.done() {
                env.reset(None)?;
            }
        }
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// Env-steps per second of a vector of `num_envs` environments over `workers` threads
/// (0 = inline), with random batch actions.
pub fn vector_steps_per_sec(
    name: &str,
    params: &toml::Table,
    num_envs: usize,
    workers: usize,
    budget: Duration,
) -> Result<f64, EnvError> {
    let config = VecEnvConfig { num_envs, workers, seed: 0, ..VecEnvConfig::default() };
    let mut envs = VecEnv::new(config, |_| make(name, params))?;
    let mut rng = StdRng::seed_from_u64(0);
    let space = envs.action_space().clone();
    let batches: Vec<BatchActions> = (0..64).map(|_| BatchActions::sample(&space, num_envs, &mut rng)).collect();
    envs.reset(Some(0))?;
    let start = Instant::now();
    let mut vector_steps = 0usize;
    while start.elapsed() < budget {
        envs.step(&batches[vector_steps % batches.len()])?;
        vector_steps += 1;
    }
    Ok((vector_steps * num_envs) as f64 / start.elapsed().as_secs_f64())
}

/// One row of the environment table.
#[derive(Clone, Debug)]
pub struct EnvThroughput {
    pub name: String,
    pub single: f64,
    pub vector_1_thread: f64,
    pub vector_2_threads: f64,
}

/// The `bench envs` table: every registered environment with default parameters, alone and as
/// a vector of `num_envs` on 1 thread (inline) and on 2 threads.
pub fn env_table(names: &[String], num_envs: usize, budget: Duration) -> Result<Vec<EnvThroughput>, EnvError> {
    let params = toml::Table::new();
    names
        .iter()
        .map(|name| {
            Ok(EnvThroughput {
                name: name.clone(),
                single: single_env_steps_per_sec(name, &params, budget)?,
                vector_1_thread: vector_steps_per_sec(name, &params, num_envs, 1, budget)?,
                vector_2_threads: vector_steps_per_sec(name, &params, num_envs, 2, budget)?,
            })
        })
        .collect()
}

/// Wall-clock seconds of single training steps, after warm-up.
#[derive(Clone, Debug)]
pub struct StepTiming {
    /// Every timed step, in order.
    pub seconds: Vec<f64>,
}

impl StepTiming {
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Times one full training step of the pretraining loop (batch assembly from the contiguous
/// buffers, the loss with its mixup draws, backward, Adam update) on a batch of `batch_size`
/// observations collected from environment `name` with a random policy: `warmup` untimed steps,
/// then `steps` timed ones. The encoder keeps training across steps, as in a real run.
#[allow(clippy::too_many_arguments)]
pub fn train_step_timing<B: AutodiffBackend>(
    name: &str,
    params: &toml::Table,
    encoder: &EncoderConfig,
    loss: &M3ixupLossConfig,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<StepTiming, PretrainError> {
    let vec = VecEnvConfig { num_envs: 16, workers: 0, seed: 0, ..VecEnvConfig::default() };
    let samples = SampleSet::collect_random(name, params, batch_size, vec, None)?;
    B::seed(device, 0);
    let mut model: M3ixupEncoder<B> = encoder.init(samples.space(), device)?;
    let mut optim = AdamConfig::new().init::<B, M3ixupEncoder<B>>();
    let mut rng = StdRng::seed_from_u64(0);
    let indices: Vec<usize> = (0..batch_size).collect();
    let mut seconds = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let batch = samples.batch::<B>(&indices, device);
        (model, _) = train_step(model, &mut optim, &batch, loss, 1e-3, &mut rng);
        // The loss report reads values back; the sync also waits for the optimiser update on
        // backends that run asynchronously.
        let _ = B::sync(device);
        if i >= warmup {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(StepTiming { seconds })
}

/// Seconds per PPO update (rollout + learning) of `updates` updates of `config` on `device`
/// with `learner_threads` ([`TrainOptions::learner_threads`]), the first (warm-up: allocator
/// growth, GPU kernel compilation) left out. The run directory is a temporary one under
/// `scratch`, removed afterwards.
pub fn ppo_update_timing<B: AutodiffBackend>(
    config: &PpoConfig,
    updates: usize,
    scratch: &Path,
    device: &B::Device,
    learner_threads: usize,
) -> Result<PpoTiming, PpoError> {
    let dir = scratch.join(format!("bench-ppo-{}-{}", std::process::id(), SCRATCH.fetch_add(1, Ordering::Relaxed)));
    let run = RunDir::at(&dir).map_err(PpoError::io(format!("cannot create {}", dir.display())))?;
    let options = TrainOptions { max_updates: Some(updates), learner_threads, ..TrainOptions::default() };
    let summary = train::<B>(config, &run, device, &options);
    let _ = std::fs::remove_dir_all(&dir);
    let column = |key: &str, row: &[(String, f64)]| row.iter().find(|(k, _)| k == key).map_or(f64::NAN, |(_, v)| *v);
    let rows = summary?.rows;
    Ok(PpoTiming {
        transitions: config.batch_size(),
        rollout_seconds: rows.iter().skip(1).map(|r| column("time/rollout_seconds", r)).collect(),
        learn_seconds: rows.iter().skip(1).map(|r| column("time/learn_seconds", r)).collect(),
    })
}

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// Per-update timings of a PPO run (warm-up update excluded).
#[derive(Clone, Debug, Default)]
pub struct PpoTiming {
    /// Transitions per update.
    pub transitions: usize,
    pub rollout_seconds: Vec<f64>,
    pub learn_seconds: Vec<f64>,
}

impl PpoTiming {
    /// The timings of several runs of the same config together.
    pub fn extend(&mut self, other: PpoTiming) {
        self.transitions = other.transitions;
        self.rollout_seconds.extend(other.rollout_seconds);
        self.learn_seconds.extend(other.learn_seconds);
    }

    /// Env-steps per second: transitions over rollout + learning time, all updates together.
    pub fn env_steps_per_sec(&self) -> f64 {
        let seconds: f64 = self.rollout_seconds.iter().chain(&self.learn_seconds).sum();
        (self.transitions * self.rollout_seconds.len()) as f64 / seconds
    }

    pub fn mean_rollout_seconds(&self) -> f64 {
        self.rollout_seconds.iter().sum::<f64>() / self.rollout_seconds.len() as f64
    }

    pub fn mean_learn_seconds(&self) -> f64 {
        self.learn_seconds.iter().sum::<f64>() / self.learn_seconds.len() as f64
    }
}

/// `bench encoders` on `device`: one step's timings with the GMC loss, then (unless
/// `gmc_only`) with the full M3ixup loss, GMC's encoder on multimodal-pendulum observations.
pub fn encoder_timings(
    device: &DeviceArgs,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    gmc_only: bool,
) -> anyhow::Result<(StepTiming, Option<StepTiming>)> {
    struct Job {
        batch_size: usize,
        warmup: usize,
        steps: usize,
        gmc_only: bool,
    }
    impl BackendJob for Job {
        type Output = (StepTiming, Option<StepTiming>);
        fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
            let (env, params, encoder) = ("multimodal-pendulum", toml::Table::new(), EncoderConfig::default());
            let time = |loss: &M3ixupLossConfig| {
                train_step_timing::<B>(env, &params, &encoder, loss, self.batch_size, self.warmup, self.steps, &device)
            };
            let gmc = time(&M3ixupLossConfig::gmc_only())?;
            let full = if self.gmc_only { None } else { Some(time(&M3ixupLossConfig::default())?) };
            Ok((gmc, full))
        }
    }
    device.run(Job { batch_size, warmup, steps, gmc_only })
}

/// `bench ppo` on `device`: each config's update timings over `rounds` runs of `updates`
/// updates, the configs interleaved round by round so that a change in the machine's load
/// reaches every config alike.
pub fn ppo_timings(
    device: &DeviceArgs,
    configs: &[PpoConfig],
    updates: usize,
    rounds: usize,
) -> anyhow::Result<Vec<PpoTiming>> {
    struct Job<'a> {
        configs: &'a [PpoConfig],
        updates: usize,
        rounds: usize,
        learner_threads: usize,
    }
    impl BackendJob for Job<'_> {
        type Output = Vec<PpoTiming>;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
            let mut timings = vec![PpoTiming::default(); self.configs.len()];
            for _ in 0..self.rounds {
                for (config, timing) in self.configs.iter().zip(&mut timings) {
                    timing.extend(ppo_update_timing::<B>(
                        config,
                        self.updates,
                        &std::env::temp_dir(),
                        &device,
                        self.learner_threads,
                    )?);
                }
            }
            Ok(timings)
        }
    }
    device.run(Job { configs, updates, rounds, learner_threads: device.learner_threads() })
}
