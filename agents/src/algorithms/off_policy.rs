//! What the off-policy agents (SAC in [`crate::algorithms::sac`], DDPG on a frozen encoder in
//! [`crate::algorithms::ddpg`]) share: config sections, squashed actions, the episode and loss
//! bookkeeping between metrics rows, and the loop state their checkpoints keep.

use std::path::Path;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{
    ActionSpace, BatchActions, BatchObs, EnvRng, VecEnv, VecEnvState, VecStep, INFO_EPISODE_LENGTH, INFO_EPISODE_RETURN,
};

use crate::algorithms::actor_critic::scale_to_bounds;
use burn::prelude::*;

use crate::algorithms::replay::{ReplayBatch, ReplayBuffer};
use crate::infra::checkpoint::{
    load_checkpoint_state, load_saved_state, loop_state_bytes, TrainError, LOOP_STATE_FILE, REPLAY_FILE,
};
use crate::infra::harness::Harness;

/// `[rollout]` of the off-policy agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// Sub-environments stepped together (one forward pass per vector step serves all).
    pub num_envs: usize,
    /// Threads stepping them, the calling thread included (0 or 1: inline, deterministic).
    pub workers: usize,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self { num_envs: 1, workers: 0 }
    }
}

/// `[replay]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    /// Transitions kept (the oldest leave first).
    pub capacity: usize,
    /// Store each frame once and rebuild stacked observations from frames (`crate::algorithms::replay`);
    /// `false` stores whole observations.
    pub share_frames: bool,
    /// Checkpoints hold the buffer (`replay.mpk`, about [`ReplayBuffer::bytes`]: the run states
    /// the size when it starts), so that a resumed run continues exactly. `false`: checkpoints
    /// stay small, and a resumed run refills an empty buffer before it learns again.
    pub checkpoint: bool,
}

impl Default for ReplaySection {
    fn default() -> Self {
        Self { capacity: 100_000, share_frames: true, checkpoint: true }
    }
}

/// `[train]` of the off-policy agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffPolicyTrain {
    /// The root seed: environments (sub-environment i: seed + i), network initialisation,
    /// exploration, replay sampling and mixup draws.
    pub seed: u64,
    /// Environment steps (summed over sub-environments) to train for.
    pub total_steps: u64,
    /// Environment steps between metrics rows.
    pub log_every: u64,
    /// Environment steps between checkpoints (and one at the end).
    pub checkpoint_every: u64,
    /// Also write the metrics as TensorBoard scalars (`events.out.tfevents.*` in the run
    /// directory; `agents::infra::run::TensorBoard`).
    pub tensorboard: bool,
}

impl Default for OffPolicyTrain {
    fn default() -> Self {
        Self { seed: 1, total_steps: 100_000, log_every: 1_000, checkpoint_every: 10_000, tensorboard: true }
    }
}

impl RolloutSection {
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.num_envs == 0 {
            return Err(TrainError::config("rollout.num_envs", "must be at least 1"));
        }
        if self.workers > self.num_envs {
            return Err(TrainError::config(
                "rollout.workers",
                format!("{} workers for {} environments: at most num_envs", self.workers, self.num_envs),
            ));
        }
        Ok(())
    }
}

impl OffPolicyTrain {
    pub fn validate(&self) -> Result<(), TrainError> {
        for (field, v) in [
            ("train.total_steps", self.total_steps),
            ("train.log_every", self.log_every),
            ("train.checkpoint_every", self.checkpoint_every),
        ] {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Checks a finite number against a range; the error names the field.
pub(crate) fn check_range(field: &str, v: f64, low: f64, high: f64, low_open: bool) -> Result<(), TrainError> {
    let above = if low_open { v > low } else { v >= low };
    if v.is_finite() && above && v <= high {
        Ok(())
    } else {
        let bracket = if low_open { "(" } else { "[" };
        Err(TrainError::config(field, format!("must lie in {bracket}{low}, {high}], got {v}")))
    }
}

/// The action width of a Box space; off-policy agents with squashed actions need one.
pub fn box_width(space: &ActionSpace, algo: &str) -> Result<usize, TrainError> {
    match space {
        ActionSpace::Box { low, .. } => Ok(low.len()),
        ActionSpace::Discrete(n) => Err(TrainError::config(
            "env.name",
            format!("{algo} needs continuous (Box) actions; this environment has Discrete({n}): use algo = \"ppo\""),
        )),
    }
}

/// Actions in `[-1, 1]` (row-major `[N, width]`) scaled to the Box bounds.
pub fn to_env_actions(space: &ActionSpace, squashed: &[f32]) -> BatchActions {
    let ActionSpace::Box { low, high } = space else { panic!("squashed actions need a Box space") };
    let w = low.len();
    BatchActions::Continuous(
        squashed
            .chunks_exact(w)
            .flat_map(|r| r.iter().enumerate().map(|(j, &v)| scale_to_bounds(v, low[j], high[j])))
            .collect(),
    )
}

/// The TD target `reward_scale * r + gamma * (1 - terminated) * next_value` of a replay batch
/// (`next_value`: `[N]`, at the next observation, without gradients). Truncated transitions
/// bootstrap from their final observation; terminated ones do not.
pub fn td_target<B: Backend>(
    batch: &ReplayBatch,
    next_value: Tensor<B, 1>,
    gamma: f64,
    reward_scale: f64,
) -> Tensor<B, 1> {
    let n = batch.len();
    let device = next_value.device();
    let rewards = Tensor::<B, 1>::from_data(TensorData::new(batch.rewards.clone(), [n]), &device);
    let not_done: Vec<f32> = batch.terminated.iter().map(|&t| if t { 0.0 } else { 1.0 }).collect();
    let not_done = Tensor::<B, 1>::from_data(TensorData::new(not_done, [n]), &device);
    rewards.mul_scalar(reward_scale) + not_done * next_value.mul_scalar(gamma)
}

/// Episode returns and rewards between two metrics rows, and running means of named losses.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    returns: Vec<f64>,
    lengths: Vec<f64>,
    reward_sum: f64,
    steps: u64,
    losses: Vec<(String, f64, usize)>,
}

impl Tally {
    /// A tally whose rows always carry `losses` (NaN until a value comes): the metrics files
    /// take their columns from the first row.
    pub fn with_losses(losses: &[&str]) -> Self {
        Self { losses: losses.iter().map(|n| (n.to_string(), 0.0, 0)).collect(), ..Self::default() }
    }

    /// Counts a vector step's rewards and finished episodes.
    pub fn step(&mut self, step: &VecStep) {
        self.reward_sum += step.rewards.iter().sum::<f64>();
        self.steps += step.rewards.len() as u64;
        for info in step.infos.iter().enumerate().filter(|(i, _)| step.done(*i)).map(|(_, info)| info) {
            if let Some(&ret) = info.get(INFO_EPISODE_RETURN) {
                self.returns.push(ret);
                self.lengths.push(info.get(INFO_EPISODE_LENGTH).copied().unwrap_or(f64::NAN));
            }
        }
    }

    /// Adds one value of a named loss.
    pub fn loss(&mut self, name: &str, value: f64) {
        match self.losses.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, sum, count)) => {
                *sum += value;
                *count += 1;
            }
            None => self.losses.push((name.to_string(), value, 1)),
        }
    }

    /// The metrics since the last row (episodes, reward per step, mean losses), and a reset.
    pub fn take_row(&mut self) -> Vec<(String, f64)> {
        let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
        let mut row = vec![
            ("charts/episodic_return".to_string(), mean(&self.returns)),
            ("charts/episodic_length".to_string(), mean(&self.lengths)),
            ("charts/episodes".to_string(), self.returns.len() as f64),
            (
                "charts/reward_per_step".to_string(),
                if self.steps == 0 { f64::NAN } else { self.reward_sum / self.steps as f64 },
            ),
        ];
        row.extend(self.losses.iter().map(|(n, s, c)| (n.clone(), if *c == 0 { f64::NAN } else { s / *c as f64 })));
        let names: Vec<String> = self.losses.iter().map(|(n, _, _)| n.clone()).collect();
        *self = Tally { losses: names.into_iter().map(|n| (n, 0.0, 0)).collect(), ..Tally::default() };
        row
    }
}

/// Files of the off-policy checkpoints besides the agent ([`crate::infra::checkpoint::AGENT_FILE`])
/// and the loop's: the target networks and the optimisers of the critic and the actor.
pub const TARGET_FILE: &str = "target.mpk";
pub const CRITIC_OPTIMIZER_FILE: &str = "critic-optimizer.mpk";
pub const ACTOR_OPTIMIZER_FILE: &str = "actor-optimizer.mpk";

/// What an off-policy checkpoint keeps of the loop besides networks and optimisers
/// ([`LOOP_STATE_FILE`]), so that a resumed run continues exactly where it stopped: the
/// generator of exploration, replay sampling and mixup draws, the environments mid-episode, the
/// schedule's counters and the metrics tallied since the last row. The replay buffer has its own
/// file ([`REPLAY_FILE`]).
#[derive(Serialize, Deserialize)]
pub struct OffPolicyLoop {
    pub rng: EnvRng,
    /// `None` while running, and in a checkpoint of environments that cannot save their state.
    pub envs: Option<VecEnvState>,
    /// Updates due but not yet made (`updates_per_step` below 1 accrues).
    pub owed: f64,
    pub next_log: u64,
    pub next_checkpoint: u64,
    pub tally: Tally,
    /// Seconds spent in updates (the `time/update_seconds` column).
    pub update_seconds: f64,
    /// Exploration state per sub-environment and action dimension (DDPG's Ornstein-Uhlenbeck
    /// noise; SAC has none).
    pub noise: Vec<f64>,
}

impl OffPolicyLoop {
    /// The state of a fresh run.
    pub fn new(train: &OffPolicyTrain, tally: Tally, noise_width: usize) -> Self {
        Self {
            rng: EnvRng::seed_from_u64(train.seed),
            envs: None,
            owed: 0.0,
            next_log: train.log_every,
            next_checkpoint: train.checkpoint_every,
            tally,
            update_seconds: 0.0,
            noise: vec![0.0; noise_width],
        }
    }

    /// Whether a metrics row is due at `global_step` (and the next one scheduled if so).
    pub fn log_due(&mut self, global_step: u64, train: &OffPolicyTrain) -> bool {
        let due = global_step >= self.next_log || global_step >= train.total_steps;
        if due {
            self.next_log += train.log_every;
        }
        due
    }

    /// Whether a checkpoint is due at `global_step` (and the next one scheduled if so).
    pub fn checkpoint_due(&mut self, global_step: u64, train: &OffPolicyTrain) -> bool {
        let due = global_step >= self.next_checkpoint || global_step >= train.total_steps;
        if due {
            self.next_checkpoint += train.checkpoint_every;
        }
        due
    }

    /// The checkpoint files of the loop: its state with the environments' (when they can save
    /// it), and the replay buffer when `replay.checkpoint` is on.
    pub fn checkpoint_files(
        &mut self,
        dir: &Path,
        envs: &mut VecEnv,
        replay: &ReplayBuffer,
        section: &ReplaySection,
    ) -> Result<Vec<(&'static str, Vec<u8>)>, TrainError> {
        self.envs = envs.save_state()?;
        let bytes = loop_state_bytes(&*self, &dir.join(LOOP_STATE_FILE));
        self.envs = None; // only checkpoints carry it
        let mut files = vec![(LOOP_STATE_FILE, bytes?)];
        if section.checkpoint {
            files.push((REPLAY_FILE, loop_state_bytes(replay, &dir.join(REPLAY_FILE))?));
        }
        Ok(files)
    }
}

/// Where an off-policy loop starts ([`start_loop`]).
pub struct LoopStart {
    pub state: OffPolicyLoop,
    /// The observations to act on.
    pub obs: BatchObs,
    /// The environment step from which the loop learns.
    pub learn_from: u64,
    /// The environments start new episodes: the caller begins them in the replay buffer
    /// (`ReplayBuffer::reset` with what it stores of `obs`).
    pub new_episodes: bool,
}

/// An off-policy run's start: a fresh one resets the environments (sub-environment i: seed + i);
/// a resumed one (`checkpoint`: the directory [`Harness::resume`] found) takes the loop state,
/// the environments and the replay buffer saved there. What cannot be restored starts anew, and
/// the run says so: environments that cannot save their state start new episodes; without a
/// saved buffer (`replay.checkpoint = false`) the buffer starts empty, the episodes new (a
/// frame-sharing buffer cannot start mid-episode), and learning waits until the buffer holds
/// `learning_starts` transitions again.
#[allow(clippy::too_many_arguments)]
pub fn start_loop(
    harness: &Harness,
    checkpoint: Option<&Path>,
    fresh: OffPolicyLoop,
    envs: &mut VecEnv,
    replay: &mut ReplayBuffer,
    section: &ReplaySection,
    seed: u64,
    learning_starts: u64,
) -> Result<LoopStart, TrainError> {
    let Some(dir) = checkpoint else {
        if section.checkpoint {
            let mb = replay.bytes() as f64 / 1e6;
            harness.note(&format!(
                "checkpoints hold the replay buffer: up to {} transitions, {mb:.1} MB (replay.checkpoint = false \
                 leaves it out)",
                replay.capacity()
            ));
        }
        let obs = envs.reset(Some(seed))?.clone();
        return Ok(LoopStart { state: fresh, obs, learn_from: learning_starts, new_episodes: true });
    };
    let saved = &load_checkpoint_state(dir)?; // with the checksums of its files
    let missing = || TrainError::Checkpoint {
        path: dir.join(LOOP_STATE_FILE),
        reason: "missing: the checkpoint predates resumable off-policy runs".into(),
    };
    let mut state: OffPolicyLoop = load_saved_state(dir, saved, LOOP_STATE_FILE)?.ok_or_else(missing)?;
    let saved_envs = state.envs.take();
    let mut learn_from = learning_starts;
    let buffer_restored = match load_saved_state::<ReplayBuffer>(dir, saved, REPLAY_FILE)? {
        Some(buffer) => {
            replay.restore(buffer)?;
            true
        }
        None => {
            learn_from = saved.global_step + learning_starts.min(replay.capacity() as u64);
            harness.note(&format!(
                "the checkpoint holds no replay buffer (replay.checkpoint = false): the resumed run starts new \
                 episodes, refills the buffer and learns again from environment step {learn_from}"
            ));
            false
        }
    };
    match saved_envs {
        Some(envs_state) if buffer_restored => {
            let obs = envs.restore_state(&envs_state)?.clone();
            Ok(LoopStart { state, obs, learn_from, new_episodes: false })
        }
        _ => {
            if buffer_restored {
                harness.note_fresh_episodes(&saved.env_name);
            }
            state.noise.fill(0.0);
            let obs = envs.reset(Some(seed.wrapping_add(saved.global_step.wrapping_mul(1_000_003))))?.clone();
            Ok(LoopStart { state, obs, learn_from, new_episodes: true })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use m3ixup_envs::BatchObs;

    #[test]
    fn td_targets_bootstrap_truncated_transitions_and_never_terminated_ones() {
        let empty = BatchObs { buffers: vec![], present: vec![] };
        let batch = ReplayBatch {
            obs: empty.clone(),
            next_obs: empty,
            actions: vec![0.0; 3],
            rewards: vec![-1.0, -2.0, -3.0],
            terminated: vec![false, true, false],
            truncated: vec![false, false, true],
        };
        let next = Tensor::<Flex, 1>::from_floats([10.0, 20.0, 30.0], &Default::default());
        let y: Vec<f32> = td_target(&batch, next, 0.5, 2.0).into_data().to_vec().unwrap();
        // 2 r + 0.5 V(next): the terminated row keeps its reward alone.
        assert_eq!(y, vec![-2.0 + 5.0, -4.0, -6.0 + 15.0]);
    }
}
