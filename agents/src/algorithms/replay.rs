//! The replay buffer of the off-policy agents (SAC, DDPG): transitions of a vector environment,
//! sampled uniformly with a seeded generator.
//!
//! **Frames are shared, not duplicated.** Environments stack their last `k` frames into each
//! observation (the `frame_stack` wrapper), so consecutive observations of an episode share
//! `k - 1` frames, and a transition's next observation is the following transition's
//! observation. The buffer keeps one copy of each frame, per sub-environment, in a ring, and
//! rebuilds observations from frames when it samples. Pixels stay `u8`.
//!
//! - The first observation of an episode repeats its first frame (as the wrapper does): frames
//!   before an episode's start read the start frame.
//! - Each transition stores the index of its observation's newest frame; its next observation
//!   is the frame after it (the final observation of an episode that ended on that step: the
//!   new episode's first frame comes after it).
//! - `terminated` and `truncated` are kept apart: learners bootstrap truncated transitions from
//!   their next (final) observation and never terminated ones.
//! - Missing modalities (sensor dropout): an absent modality is stored as a flag, and its frame
//!   is filled in from the next observation that has the modality (whose stack holds it).
//! - Every stacked observation is checked against the frames already stored; one that does not
//!   continue its predecessor's stack (a wrapper that changes stacked frames after stacking) is an
//!   error naming the modality. `frame_stack = 1` stores whole observations.
//!
//! **Memory per transition** ([`ReplayBuffer::bytes`]), with `n` transitions per
//! sub-environment and `F = n + n / 16 + k + 1` frame slots: `F / n` times (one frame of every
//! modality, plus 2 flag bytes per modality and 8 bytes of episode bookkeeping), plus 16 bytes
//! (index, reward, flags) and 4 bytes per action dimension. For the multimodal pendulum (two
//! frames of u8 60x60 pixels and f32 6-microphone sound, one action): about
//! 1.06 x (3,600 + 24 + 12) + 20 = 3,887 bytes, against 1.06 x (7,248 + 12) + 20 = 7,739 for
//! stored stacks (a 100,000-transition buffer: 389 MB instead of 774 MB). A test checks it.
//!
//! Each episode end takes one extra frame (its final observation), which the `n / 16` slots
//! cover for episodes of 16 steps or more; with shorter episodes the oldest transitions leave a
//! little before `n` are stored.

use std::collections::VecDeque;

use rand::Rng;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{BatchObs, DType, ModalityData, ObsSpace};

/// Errors of the replay buffer; they name what does not fit.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay buffer: {0}")]
    Invalid(String),
    #[error(
        "replay buffer: the observation of sub-environment {env} does not continue the frames of its \
         predecessor in modality `{modality}` (frame_stack = {k}): frames can be shared only when each \
         observation stacks the previous one's frames; use replay.share_frames = false"
    )]
    NotAFrameStack { env: usize, modality: String, k: usize },
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Transition {
    /// Absolute index of the observation's newest frame; the next observation's is `frame + 1`.
    frame: u64,
    reward: f32,
    terminated: bool,
    truncated: bool,
}

/// The frames and transitions of one sub-environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stream {
    /// Per modality, `slots * frame_numel` values; absolute frame `a` sits in slot `a % slots`.
    frames: Vec<ModalityData>,
    /// Per slot and modality: the observation whose newest frame is this one had the modality.
    present: Vec<bool>,
    /// Per slot and modality: the slot holds the true frame (not yet when it was absent).
    known: Vec<bool>,
    /// Per slot: the absolute index of the first frame of its episode.
    episode_start: Vec<u64>,
    /// Frames written so far (the absolute index of the next one).
    next_frame: u64,
    /// The newest frame of the observation the environment acts on next.
    current: Option<u64>,
    transitions: VecDeque<Transition>,
    actions: VecDeque<f32>,
}

/// A sampled batch, on the host: observations as vector-environment batches (row `i` is
/// transition `i`), ready for [`crate::representation::storage::batch_input`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayBatch {
    pub obs: BatchObs,
    /// The observation after the action (for an episode that ended there: its final one).
    pub next_obs: BatchObs,
    /// `[batch * action_width]`, row-major.
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
}

impl ReplayBatch {
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }
}

/// Transitions of `num_envs` sub-environments (module documentation). It serializes whole
/// (every frame slot, used or not: [`ReplayBuffer::bytes`] is about its size), so that a
/// checkpoint can hold it and a resumed run samples what an uninterrupted one would.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayBuffer {
    space: ObsSpace,
    /// Frames per observation (1: whole observations).
    k: usize,
    /// Elements of one frame, per modality.
    frame_numel: Vec<usize>,
    action_width: usize,
    /// Transitions kept per sub-environment.
    per_env: usize,
    slots: usize,
    streams: Vec<Stream>,
}

impl ReplayBuffer {
    /// A buffer of at most `capacity` transitions (split evenly over `num_envs`
    /// sub-environments) of observations in `space` that stack `frame_stack` frames along their
    /// first axis (1: store whole observations).
    pub fn new(
        space: &ObsSpace,
        action_width: usize,
        num_envs: usize,
        capacity: usize,
        frame_stack: usize,
    ) -> Result<Self, ReplayError> {
        if num_envs == 0 || frame_stack == 0 {
            return Err(ReplayError::Invalid(format!(
                "num_envs ({num_envs}) and frame_stack ({frame_stack}) must be at least 1"
            )));
        }
        if capacity < num_envs {
            return Err(ReplayError::Invalid(format!(
                "capacity {capacity} is less than one transition per sub-environment ({num_envs})"
            )));
        }
        let mut frame_numel = Vec::with_capacity(space.len());
        for (name, spec) in space.iter() {
            if spec.shape[0] % frame_stack != 0 {
                return Err(ReplayError::Invalid(format!(
                    "modality `{name}` has shape {:?}, whose first axis does not hold {frame_stack} stacked frames",
                    spec.shape
                )));
            }
            frame_numel.push(spec.numel() / frame_stack);
        }
        let per_env = capacity.div_ceil(num_envs);
        let slots = per_env + per_env / 16 + frame_stack + 1;
        let m = space.len();
        // Built one by one: a cloned VecDeque does not keep its capacity.
        let streams = (0..num_envs)
            .map(|_| Stream {
                frames: space
                    .iter()
                    .zip(&frame_numel)
                    .map(|((_, s), &n)| ModalityData::zeros(s.dtype, slots * n))
                    .collect(),
                present: vec![false; slots * m],
                known: vec![false; slots * m],
                episode_start: vec![0; slots],
                next_frame: 0,
                current: None,
                transitions: VecDeque::with_capacity(per_env),
                actions: VecDeque::with_capacity(per_env * action_width),
            })
            .collect();
        Ok(Self { space: space.clone(), k: frame_stack, frame_numel, action_width, per_env, slots, streams })
    }

    pub fn space(&self) -> &ObsSpace {
        &self.space
    }

    /// Takes the contents of `saved` (a buffer deserialized from a checkpoint), which must have
    /// this buffer's layout: the same space, frame stack, action width, sub-environments and
    /// capacity.
    pub fn restore(&mut self, saved: ReplayBuffer) -> Result<(), ReplayError> {
        let layout = |b: &ReplayBuffer| {
            (b.space.clone(), b.k, b.frame_numel.clone(), b.action_width, b.per_env, b.slots, b.streams.len())
        };
        if layout(&saved) != layout(self) {
            return Err(ReplayError::Invalid(format!(
                "the saved buffer's layout (frame stack {}, action width {}, {} sub-environments, capacity {}) \
                 does not match this run's (frame stack {}, action width {}, {} sub-environments, capacity {}), \
                 or its observation space differs",
                saved.k,
                saved.action_width,
                saved.streams.len(),
                saved.capacity(),
                self.k,
                self.action_width,
                self.streams.len(),
                self.capacity()
            )));
        }
        self.streams = saved.streams;
        for s in &mut self.streams {
            // Deserialized queues hold just their items: room for the rest, as `new` makes.
            s.transitions.reserve(self.per_env.saturating_sub(s.transitions.len()));
            s.actions.reserve((self.per_env * self.action_width).saturating_sub(s.actions.len()));
        }
        Ok(())
    }

    pub fn num_envs(&self) -> usize {
        self.streams.len()
    }

    /// Transitions stored.
    pub fn len(&self) -> usize {
        self.streams.iter().map(|s| s.transitions.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most transitions it holds.
    pub fn capacity(&self) -> usize {
        self.per_env * self.streams.len()
    }

    /// Bytes allocated for frames, flags and transitions (module documentation).
    pub fn bytes(&self) -> usize {
        self.streams
            .iter()
            .map(|s| {
                let frames: usize = s
                    .frames
                    .iter()
                    .map(|d| match d {
                        ModalityData::U8(v) => v.capacity(),
                        ModalityData::F32(v) => v.capacity() * 4,
                    })
                    .sum();
                frames
                    + s.present.capacity()
                    + s.known.capacity()
                    + s.episode_start.capacity() * std::mem::size_of::<u64>()
                    + s.transitions.capacity() * std::mem::size_of::<Transition>()
                    + s.actions.capacity() * std::mem::size_of::<f32>()
            })
            .sum()
    }

    /// Starts every sub-environment's episode at `obs` (after `VecEnv::reset`).
    pub fn reset(&mut self, obs: &BatchObs) -> Result<(), ReplayError> {
        self.check_batch(obs, "reset")?;
        for env in 0..self.streams.len() {
            self.begin_episode(env, obs, env)?;
        }
        Ok(())
    }

    /// Records one vector step: sub-environment `i` took `actions[i * width..]` and got
    /// `rewards[i]`; `next_obs` row `i` is what it observed after the step (for an episode that
    /// ended: its final observation), `obs` row `i` what it acts on next (the new episode's first
    /// observation where one ended; otherwise the same as `next_obs`).
    pub fn add(
        &mut self,
        actions: &[f32],
        rewards: &[f64],
        terminated: &[bool],
        truncated: &[bool],
        next_obs: &BatchObs,
        obs: &BatchObs,
    ) -> Result<(), ReplayError> {
        let n = self.streams.len();
        if actions.len() != n * self.action_width || rewards.len() != n || terminated.len() != n || truncated.len() != n
        {
            return Err(ReplayError::Invalid(format!(
                "a step of {n} sub-environments needs {} action values and {n} rewards and flags, got {}, {}, {}, {}",
                n * self.action_width,
                actions.len(),
                rewards.len(),
                terminated.len(),
                truncated.len()
            )));
        }
        self.check_batch(next_obs, "next_obs")?;
        self.check_batch(obs, "obs")?;
        for env in 0..n {
            let current = self.streams[env].current.ok_or_else(|| {
                ReplayError::Invalid("add before reset: the buffer has no current observation".into())
            })?;
            let start = self.streams[env].episode_start[self.slot(current)];
            let frame = self.push_frame(env, next_obs, env, start)?;
            let stream = &mut self.streams[env];
            stream.transitions.push_back(Transition {
                frame: current,
                reward: rewards[env] as f32,
                terminated: terminated[env],
                truncated: truncated[env],
            });
            stream.actions.extend(&actions[env * self.action_width..(env + 1) * self.action_width]);
            if stream.transitions.len() > self.per_env {
                stream.transitions.pop_front();
                stream.actions.drain(..self.action_width);
            }
            stream.current = Some(frame);
            if terminated[env] || truncated[env] {
                self.begin_episode(env, obs, env)?;
            }
        }
        Ok(())
    }

    /// `batch` transitions drawn uniformly (with replacement) with `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> Result<ReplayBatch, ReplayError> {
        let len = self.len();
        if len == 0 {
            return Err(ReplayError::Invalid("cannot sample from an empty buffer".into()));
        }
        let indices: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..len)).collect();
        Ok(self.gather(&indices))
    }

    /// The transitions at `indices`, numbered sub-environment by sub-environment, oldest first.
    pub fn gather(&self, indices: &[usize]) -> ReplayBatch {
        let b = indices.len();
        let m = self.space.len();
        let empty = || BatchObs {
            buffers: self
                .space
                .iter()
                .map(|(_, s)| match s.dtype {
                    DType::U8 => ModalityData::U8(Vec::with_capacity(b * s.numel())),
                    DType::F32 => ModalityData::F32(Vec::with_capacity(b * s.numel())),
                })
                .collect(),
            present: Vec::with_capacity(b * m),
        };
        let mut out = ReplayBatch {
            obs: empty(),
            next_obs: empty(),
            actions: Vec::with_capacity(b * self.action_width),
            rewards: Vec::with_capacity(b),
            terminated: Vec::with_capacity(b),
            truncated: Vec::with_capacity(b),
        };
        for &index in indices {
            let (env, t) = self.locate(index);
            let stream = &self.streams[env];
            let tr = stream.transitions[t];
            self.write_observation(env, tr.frame, &mut out.obs);
            self.write_observation(env, tr.frame + 1, &mut out.next_obs);
            let w = self.action_width;
            out.actions.extend(stream.actions.range(t * w..(t + 1) * w));
            out.rewards.push(tr.reward);
            out.terminated.push(tr.terminated);
            out.truncated.push(tr.truncated);
        }
        out
    }

    fn locate(&self, mut index: usize) -> (usize, usize) {
        for (env, s) in self.streams.iter().enumerate() {
            if index < s.transitions.len() {
                return (env, index);
            }
            index -= s.transitions.len();
        }
        panic!("transition index out of range ({} stored)", self.len())
    }

    fn slot(&self, frame: u64) -> usize {
        (frame % self.slots as u64) as usize
    }

    fn check_batch(&self, batch: &BatchObs, what: &str) -> Result<(), ReplayError> {
        let n = self.streams.len();
        let ok = batch.num_modalities() == self.space.len()
            && batch.num_envs() == n
            && self.space.iter().enumerate().all(|(m, (_, s))| batch.numel(m) == s.numel());
        if ok {
            Ok(())
        } else {
            Err(ReplayError::Invalid(format!("`{what}` is not a batch of {n} observations of {}", self.space)))
        }
    }

    fn begin_episode(&mut self, env: usize, batch: &BatchObs, row: usize) -> Result<(), ReplayError> {
        let start = self.streams[env].next_frame;
        let frame = self.push_frame(env, batch, row, start)?;
        self.streams[env].current = Some(frame);
        Ok(())
    }

    /// Writes the newest frame of `batch` row `row` as the next frame of `env` (an episode that
    /// began at frame `start`), checks its older frames against the stored ones and fills in
    /// those not known yet. First drops the transitions whose frames the write overwrites.
    fn push_frame(&mut self, env: usize, batch: &BatchObs, row: usize, start: u64) -> Result<u64, ReplayError> {
        let a = self.streams[env].next_frame;
        if a >= self.slots as u64 {
            let overwritten = a - self.slots as u64;
            while let Some(front) = self.streams[env].transitions.front().copied() {
                let oldest = front
                    .frame
                    .saturating_sub(self.k as u64 - 1)
                    .max(self.streams[env].episode_start[self.slot(front.frame)]);
                if oldest > overwritten {
                    break;
                }
                self.streams[env].transitions.pop_front();
                self.streams[env].actions.drain(..self.action_width);
            }
        }
        let (slot, m_count, k) = (self.slot(a), self.space.len(), self.k);
        self.streams[env].episode_start[slot] = start;
        for m in 0..m_count {
            let n = self.frame_numel[m];
            let present = batch.present[row * m_count + m];
            let stream = &mut self.streams[env];
            stream.present[slot * m_count + m] = present;
            stream.known[slot * m_count + m] = false;
            if !present {
                continue;
            }
            // Frames j = k-1 (newest) down to 0 (oldest) of the stack; frame j is absolute frame
            // a - (k - 1 - j), or the episode's first frame for those before it.
            for j in (0..k).rev() {
                let abs = a.saturating_sub((k - 1 - j) as u64).max(start);
                let s = (abs % self.slots as u64) as usize;
                let known = stream.known[s * m_count + m];
                let same = match (&mut stream.frames[m], &batch.buffers[m]) {
                    (ModalityData::U8(dst), ModalityData::U8(src)) => {
                        let chunk = &src[(row * k + j) * n..(row * k + j + 1) * n];
                        let stored = &mut dst[s * n..(s + 1) * n];
                        if known {
                            stored == chunk
                        } else {
                            stored.copy_from_slice(chunk);
                            true
                        }
                    }
                    (ModalityData::F32(dst), ModalityData::F32(src)) => {
                        let chunk = &src[(row * k + j) * n..(row * k + j + 1) * n];
                        let stored = &mut dst[s * n..(s + 1) * n];
                        if known {
                            stored.iter().zip(chunk).all(|(x, y)| x.to_bits() == y.to_bits())
                        } else {
                            stored.copy_from_slice(chunk);
                            true
                        }
                    }
                    _ => {
                        return Err(ReplayError::Invalid(format!(
                            "modality `{}` changed its dtype",
                            self.space.name(m)
                        )))
                    }
                };
                if !same {
                    return Err(ReplayError::NotAFrameStack { env, modality: self.space.name(m).to_string(), k });
                }
                stream.known[s * m_count + m] = true;
            }
        }
        self.streams[env].next_frame = a + 1;
        Ok(a)
    }

    /// Appends the observation whose newest frame is `frame` of `env` to `out` (zeros and a
    /// cleared flag for absent modalities).
    fn write_observation(&self, env: usize, frame: u64, out: &mut BatchObs) {
        let stream = &self.streams[env];
        let (slot, m_count, k) = (self.slot(frame), self.space.len(), self.k);
        let start = stream.episode_start[slot];
        for m in 0..m_count {
            let n = self.frame_numel[m];
            let present = stream.present[slot * m_count + m];
            out.present.push(present);
            for j in 0..k {
                let abs = frame.saturating_sub((k - 1 - j) as u64).max(start);
                let s = (abs % self.slots as u64) as usize;
                match (&mut out.buffers[m], &stream.frames[m]) {
                    (ModalityData::U8(dst), ModalityData::U8(src)) if present => {
                        dst.extend_from_slice(&src[s * n..(s + 1) * n])
                    }
                    (ModalityData::F32(dst), ModalityData::F32(src)) if present => {
                        dst.extend_from_slice(&src[s * n..(s + 1) * n])
                    }
                    (ModalityData::U8(dst), _) => dst.extend(std::iter::repeat_n(0u8, n)),
                    (ModalityData::F32(dst), _) => dst.extend(std::iter::repeat_n(0.0f32, n)),
                }
            }
        }
    }
}

/// The observations after a vector step, row by row: the final observation for an
/// environment whose episode ended, the step's observation otherwise.
pub fn next_observations(step: &m3ixup_envs::VecStep) -> BatchObs {
    let mut next = step.obs.clone();
    let m = next.num_modalities();
    for (i, final_obs) in step.final_obs.iter().enumerate() {
        let Some(obs) = final_obs else { continue };
        for (k, data) in obs.data.iter().enumerate() {
            let n = data.len();
            match (&mut next.buffers[k], data) {
                (ModalityData::U8(dst), ModalityData::U8(src)) => dst[i * n..(i + 1) * n].copy_from_slice(src),
                (ModalityData::F32(dst), ModalityData::F32(src)) => dst[i * n..(i + 1) * n].copy_from_slice(src),
                _ => panic!("a final observation keeps its modalities' dtypes"),
            }
        }
        next.present[i * m..(i + 1) * m].copy_from_slice(&obs.present);
    }
    next
}
