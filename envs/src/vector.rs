//! Vector environments: `N` sub-environments stepped as one batch, inline or over `W` worker
//! threads, with same-step autoreset and observations written straight into contiguous
//! per-modality batch buffers.
//!
//! Layout: [`VecEnv`] owns one [`VecStep`] for its whole life. Its buffers are allocated once and
//! never resized; each chunk of sub-environments (one per worker, or a single chunk when inline)
//! writes its own disjoint rows of them. Inline and threaded runs go through the same
//! chunk-stepping code, so they produce bit-identical batches.
//!
//! Threads: per step, one command to each worker and one reply back (one-slot channels). The
//! main thread hands its core over, then sleeps until the last worker signals or `step_timeout`
//! passes; it never busy-waits. Idle workers poll (yielding) for 50 µs before they park.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::slice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::env::{Env, Info, ModalityData, Obs};
use crate::error::{panic_message, EnvError};
use crate::spaces::{Action, ActionSpace, ObsSpace};
use crate::state::EnvState;

/// How many sub-environments, on how many threads, seeded how.
#[derive(Clone, Debug, PartialEq)]
pub struct VecEnvConfig {
    /// Number of sub-environments `N` (at least 1).
    pub num_envs: usize,
    /// Threads that step sub-environments, `W` (at most `num_envs`): the calling thread steps
    /// the first chunk and `W - 1` worker threads step the others, so `W` matches the cores
    /// given to the environments. 0 (or 1) steps everything on the calling thread: the debug
    /// and determinism path.
    pub workers: usize,
    /// Seed of the first reset when it is `reset(None)`: sub-environment `i` gets `seed + i`.
    pub seed: u64,
    /// How long a reset or step waits for a worker before declaring it stuck.
    pub step_timeout: Duration,
}

impl Default for VecEnvConfig {
    fn default() -> Self {
        Self { num_envs: 1, workers: 0, seed: 0, step_timeout: Duration::from_secs(60) }
    }
}

impl VecEnvConfig {
    /// Checks the values; the error names the offending field.
    pub fn validate(&self) -> Result<(), EnvError> {
        let bad = |param: &str, reason: String| {
            Err(EnvError::InvalidParam { env: "VecEnv".into(), param: param.into(), reason })
        };
        if self.num_envs == 0 {
            return bad("num_envs", "must be at least 1".into());
        }
        if self.workers > self.num_envs {
            return bad(
                "workers",
                format!("{} workers for {} environments: must be at most num_envs", self.workers, self.num_envs),
            );
        }
        if self.step_timeout.is_zero() {
            return bad("step_timeout", "must be positive".into());
        }
        Ok(())
    }
}

/// What [`VecEnv::save_state`] saves: enough for [`VecEnv::restore_state`] to continue exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VecEnvState {
    /// Each sub-environment's state, in order.
    pub envs: Vec<EnvState>,
    /// The observations the sub-environments show (what the caller acts on next).
    pub obs: BatchObs,
}

/// Observations of all sub-environments, one contiguous buffer per modality.
///
/// `buffers[m]` holds modality `m` (in the space's order) of every environment, env-major:
/// environment `i` occupies `[i * numel, (i + 1) * numel)`, so a buffer reshapes to
/// `[num_envs, ..shape]` without copying. `present` is `[num_envs * num_modalities]`, env-major.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchObs {
    pub buffers: Vec<ModalityData>,
    pub present: Vec<bool>,
}

impl BatchObs {
    /// Zero observations of `space` for `num_envs` environments, every modality present.
    pub fn zeros(space: &ObsSpace, num_envs: usize) -> Self {
        Self {
            buffers: space.iter().map(|(_, s)| ModalityData::zeros(s.dtype, num_envs * s.numel())).collect(),
            present: vec![true; num_envs * space.len()],
        }
    }

    pub fn num_modalities(&self) -> usize {
        self.buffers.len()
    }

    pub fn num_envs(&self) -> usize {
        self.present.len().checked_div(self.buffers.len()).unwrap_or(0)
    }

    /// Elements of modality `m` in one environment's observation.
    pub fn numel(&self, m: usize) -> usize {
        self.buffers[m].len().checked_div(self.num_envs()).unwrap_or(0)
    }

    /// The whole batch buffer of modality `m`.
    pub fn modality(&self, m: usize) -> &ModalityData {
        &self.buffers[m]
    }

    /// The batch buffer of modality `m` if it holds bytes.
    pub fn modality_u8(&self, m: usize) -> Option<&[u8]> {
        self.buffers[m].as_u8()
    }

    /// The batch buffer of modality `m` if it holds floats.
    pub fn modality_f32(&self, m: usize) -> Option<&[f32]> {
        self.buffers[m].as_f32()
    }

    /// The presence flags of environment `i`, one per modality.
    pub fn env_present(&self, i: usize) -> &[bool] {
        let m = self.num_modalities();
        &self.present[i * m..(i + 1) * m]
    }

    /// A copy of environment `i`'s observation.
    pub fn env_obs(&self, i: usize) -> Obs {
        let data = (0..self.num_modalities())
            .map(|m| {
                let n = self.numel(m);
                match &self.buffers[m] {
                    ModalityData::U8(v) => ModalityData::U8(v[i * n..(i + 1) * n].to_vec()),
                    ModalityData::F32(v) => ModalityData::F32(v[i * n..(i + 1) * n].to_vec()),
                }
            })
            .collect();
        Obs { data, present: self.env_present(i).to_vec() }
    }
}

/// The result of one batched step (see [`VecEnv`] for the autoreset rule).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VecStep {
    /// The observation to act on next: for a finished environment, the new episode's first.
    pub obs: BatchObs,
    pub rewards: Vec<f64>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// The info of each environment's step (after a reset: of its reset).
    pub infos: Vec<Info>,
    /// `Some(last observation)` for each environment whose episode ended on this step.
    pub final_obs: Vec<Option<Obs>>,
}

impl VecStep {
    fn zeros(space: &ObsSpace, num_envs: usize) -> Self {
        Self {
            obs: BatchObs::zeros(space, num_envs),
            rewards: vec![0.0; num_envs],
            terminated: vec![false; num_envs],
            truncated: vec![false; num_envs],
            infos: vec![Info::new(); num_envs],
            final_obs: vec![None; num_envs],
        }
    }

    pub fn num_envs(&self) -> usize {
        self.rewards.len()
    }

    /// Whether environment `i`'s episode ended on this step (and it was reset).
    pub fn done(&self, i: usize) -> bool {
        self.terminated[i] || self.truncated[i]
    }
}

/// One action per sub-environment.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchActions {
    /// `[num_envs * dim]`, env-major: environment `i` takes `[i * dim, (i + 1) * dim)`.
    Continuous(Vec<f32>),
    /// `[num_envs]`.
    Discrete(Vec<i64>),
}

impl BatchActions {
    /// Zero actions for `num_envs` environments of `space`.
    pub fn zeros(space: &ActionSpace, num_envs: usize) -> Self {
        match space {
            ActionSpace::Box { low, .. } => BatchActions::Continuous(vec![0.0; num_envs * low.len()]),
            ActionSpace::Discrete(_) => BatchActions::Discrete(vec![0; num_envs]),
        }
    }

    /// Uniformly random valid actions for `num_envs` environments of `space`.
    pub fn sample(space: &ActionSpace, num_envs: usize, rng: &mut impl rand::Rng) -> Self {
        match space {
            ActionSpace::Box { low, high } => BatchActions::Continuous(
                (0..num_envs)
                    .flat_map(|_| low.iter().zip(high))
                    .map(|(&l, &h)| crate::spaces::sample_in(l, h, rng))
                    .collect(),
            ),
            ActionSpace::Discrete(n) => {
                BatchActions::Discrete((0..num_envs).map(|_| rng.gen_range(0..*n as i64)).collect())
            }
        }
    }

    /// Number of values (not environments).
    pub fn len(&self) -> usize {
        match self {
            BatchActions::Continuous(v) => v.len(),
            BatchActions::Discrete(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `N` environments stepped as one batch, inline (`workers == 0`) or over worker threads.
///
/// **Autoreset: same-step.** When sub-environment `i`'s step ends its episode (terminated or
/// truncated), it is reset with `reset(None)` within the same `step` call: `final_obs[i]` holds
/// the finishing step's observation, `obs` holds the new episode's first observation, and
/// `rewards[i]`, `terminated[i]`, `truncated[i]` and `infos[i]` are the finishing step's (the
/// reset's info is dropped). The learner bootstraps truncated episodes from `final_obs`.
///
/// **Seeding.** `reset(Some(s))` seeds sub-environment `i` with `s + i` (wrapping); `reset(None)`
/// continues each environment's own stream, except before any reset, when it uses
/// `config.seed + i`.
///
/// **Failures.** A sub-environment that panics or fails becomes [`EnvError::SubEnv`] naming its
/// index; a worker that does not answer within `step_timeout`, or dies, becomes
/// [`EnvError::Worker`]. Either poisons the vector environment: later calls report it.
/// Rejected action batches and a step before the first reset are caller errors that change
/// nothing and do not poison.
pub struct VecEnv {
    config: VecEnvConfig,
    name: String,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    /// Batch storage, allocated once and never resized: workers hold raw pointers into it.
    batch: VecStep,
    /// The caller's actions copied here, so workers never read memory the caller owns.
    actions: StagedActions,
    backend: Backend,
    started: bool,
    poisoned: Option<EnvError>,
}

impl VecEnv {
    /// Builds sub-environment `i` with `make(i)` on this thread, checks that all share one
    /// observation and action space, and moves contiguous chunks of them to the workers.
    pub fn new(config: VecEnvConfig, make: impl Fn(usize) -> Result<Box<dyn Env>, EnvError>) -> Result<Self, EnvError> {
        config.validate()?;
        let n = config.num_envs;
        let envs = (0..n).map(&make).collect::<Result<Vec<_>, _>>()?;
        let obs_space = envs[0].observation_space().clone();
        let action_space = envs[0].action_space().clone();
        action_space.validate()?;
        for (i, env) in envs.iter().enumerate().skip(1) {
            if *env.observation_space() != obs_space {
                return Err(EnvError::InvalidSpace(format!(
                    "sub-environment {i} observes {}, sub-environment 0 observes {obs_space}",
                    env.observation_space()
                )));
            }
            if *env.action_space() != action_space {
                return Err(EnvError::InvalidSpace(format!(
                    "sub-environment {i} acts in {}, sub-environment 0 acts in {action_space}",
                    env.action_space()
                )));
            }
        }
        let name = format!("vector of {n} `{}`", envs[0].name());
        let mut venv = VecEnv {
            batch: VecStep::zeros(&obs_space, n),
            actions: StagedActions::zeros(&action_space, n),
            backend: Backend::Inline(Chunk::new(0, Vec::new(), &obs_space, &action_space)),
            started: false,
            poisoned: None,
            config,
            name,
            obs_space,
            action_space,
        };
        if venv.config.workers <= 1 {
            venv.backend = Backend::Inline(Chunk::new(0, envs, &venv.obs_space, &venv.action_space));
            return Ok(venv);
        }
        let mut envs = envs.into_iter();
        let mut local = None;
        for (worker, (first, end)) in chunk_bounds(n, venv.config.workers).enumerate() {
            let chunk =
                Chunk::new(first, envs.by_ref().take(end - first).collect(), &venv.obs_space, &venv.action_space);
            let rows = ChunkRows::new(&mut venv.batch, &mut venv.actions, first, end);
            if worker == 0 {
                local = Some((chunk, rows));
                venv.backend = Backend::Threads { local: None, pool: Pool::new(venv.config.workers - 1) };
            } else if let Backend::Threads { pool, .. } = &mut venv.backend {
                // On an error, Drop closes and joins the workers already started.
                pool.spawn(worker, first, end, chunk, rows)?;
            }
        }
        if let Backend::Threads { local: slot, .. } = &mut venv.backend {
            *slot = local;
        }
        Ok(venv)
    }

    pub fn observation_space(&self) -> &ObsSpace {
        &self.obs_space
    }

    pub fn action_space(&self) -> &ActionSpace {
        &self.action_space
    }

    pub fn num_envs(&self) -> usize {
        self.config.num_envs
    }

    /// Threads that step sub-environments, the calling thread included; 0 when inline.
    pub fn workers(&self) -> usize {
        self.config.workers
    }

    pub fn config(&self) -> &VecEnvConfig {
        &self.config
    }

    /// Whether an earlier failure made this vector environment unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Resets every sub-environment: `Some(s)` seeds environment `i` with `s + i` (wrapping);
    /// `None` continues each one's stream (`config.seed + i` on the very first reset).
    pub fn reset(&mut self, seed: Option<u64>) -> Result<&BatchObs, EnvError> {
        self.check_usable()?;
        let seeding = match seed {
            Some(s) => Seeding::Base(s),
            None if !self.started => Seeding::Base(self.config.seed),
            None => Seeding::Continue,
        };
        self.dispatch(Job::Reset(seeding))?;
        self.started = true;
        Ok(&self.batch.obs)
    }

    /// Resets every sub-environment, environment `i` with `seeds[i]` (`None`: it continues its
    /// own stream), as Gymnasium's `reset(seed=[...])`. `seeds` has one entry per environment.
    pub fn reset_each(&mut self, seeds: &[Option<u64>]) -> Result<&BatchObs, EnvError> {
        self.check_usable()?;
        if seeds.len() != self.config.num_envs {
            return Err(EnvError::Other {
                env: self.name.clone(),
                message: format!(
                    "{} seeds for {} environments: give one per environment",
                    seeds.len(),
                    self.config.num_envs
                ),
            });
        }
        // Before the first reset, an unseeded environment starts from `config.seed + i`.
        let seeds: Vec<Option<u64>> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| s.or((!self.started).then(|| self.config.seed.wrapping_add(i as u64))))
            .collect();
        self.dispatch(Job::Reset(Seeding::Each(seeds.into())))?;
        self.started = true;
        Ok(&self.batch.obs)
    }

    /// The state of every sub-environment and the observations they show now, for a run that
    /// continues later exactly where it stopped ([`VecEnv::restore_state`]). `None` when a
    /// sub-environment cannot save its state (see [`Env::save_state`]).
    pub fn save_state(&mut self) -> Result<Option<VecEnvState>, EnvError> {
        self.check_usable()?;
        if !self.started {
            return Err(EnvError::NeedsReset { env: self.name.clone() });
        }
        let slots = Arc::new(Mutex::new(vec![None; self.config.num_envs]));
        self.dispatch(Job::Save(slots.clone()))?;
        let states = std::mem::take(&mut *slots.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(states
            .into_iter()
            .collect::<Option<Vec<EnvState>>>()
            .map(|envs| VecEnvState { envs, obs: self.batch.obs.clone() }))
    }

    /// Puts every sub-environment back into `state` (saved by [`VecEnv::save_state`] from the
    /// same environments, as many of them) and returns the observations to act on, as a reset
    /// would; `step` may follow directly.
    pub fn restore_state(&mut self, state: &VecEnvState) -> Result<&BatchObs, EnvError> {
        self.check_usable()?;
        // Shapes only: comparing with a zero batch would allocate every pixel buffer.
        let n = self.config.num_envs;
        let fits = state.envs.len() == n
            && state.obs.present.len() == n * self.obs_space.len()
            && state.obs.buffers.len() == self.obs_space.len()
            && state
                .obs
                .buffers
                .iter()
                .zip(self.obs_space.iter())
                .all(|(b, (_, spec))| b.dtype() == spec.dtype && b.len() == n * spec.numel());
        if !fits {
            return Err(EnvError::State {
                env: self.name.clone(),
                reason: format!(
                    "the saved state holds {} environments and observations of another shape; this vector has {} of {}",
                    state.envs.len(),
                    self.config.num_envs,
                    self.obs_space
                ),
            });
        }
        self.dispatch(Job::Restore(state.envs.clone().into()))?;
        // In place: workers hold pointers into these buffers.
        for (to, from) in self.batch.obs.buffers.iter_mut().zip(&state.obs.buffers) {
            match (to, from) {
                (ModalityData::U8(to), ModalityData::U8(from)) => to.copy_from_slice(from),
                (ModalityData::F32(to), ModalityData::F32(from)) => to.copy_from_slice(from),
                _ => unreachable!("dtypes checked above"),
            }
        }
        self.batch.obs.present.copy_from_slice(&state.obs.present);
        self.started = true;
        Ok(&self.batch.obs)
    }

    /// Steps every sub-environment with its action, resetting those whose episode ends.
    pub fn step(&mut self, actions: &BatchActions) -> Result<&VecStep, EnvError> {
        self.check_usable()?;
        if !self.started {
            return Err(EnvError::NeedsReset { env: self.name.clone() });
        }
        self.actions
            .load(actions, self.config.num_envs)
            .map_err(|reason| EnvError::InvalidAction { env: self.name.clone(), reason })?;
        self.dispatch(Job::Step)?;
        Ok(&self.batch)
    }

    fn check_usable(&self) -> Result<(), EnvError> {
        match &self.poisoned {
            None => Ok(()),
            Some(e) => Err(EnvError::Other {
                env: self.name.clone(),
                message: format!("poisoned by an earlier error ({e}); build a new vector environment"),
            }),
        }
    }

    /// Runs `job` on every chunk and waits for all of them; any failure poisons `self`.
    fn dispatch(&mut self, job: Job) -> Result<(), EnvError> {
        let result = match &mut self.backend {
            Backend::Inline(chunk) => chunk.run(job, self.actions.view(), ChunkOut::whole(&mut self.batch)),
            Backend::Threads { local, pool } => {
                let (chunk, rows) = local.as_mut().expect("a threaded backend always has its local chunk");
                pool.start(&job);
                // SAFETY: the local chunk's rows are disjoint from every worker's (see
                // `ChunkRows`), and nothing else touches the batch until `pool.wait` returns.
                let (actions, out) = unsafe { rows.views() };
                let local_result = chunk.run(job, actions, out);
                let workers_result = pool.wait(self.config.step_timeout);
                local_result.and(workers_result)
            }
        };
        if let Err(e) = &result {
            self.poisoned = Some(e.clone());
        }
        result
    }
}

impl Drop for VecEnv {
    fn drop(&mut self) {
        let Backend::Threads { pool: Pool { workers, .. }, .. } = &mut self.backend else {
            return;
        };
        for w in workers.iter().filter(|w| w.answering) {
            // The worker is idle, so its one-slot channel is empty; it exits on `Close`.
            let _ = w.commands.try_send(Cmd::Close);
        }
        let mut detached = false;
        for w in workers.iter_mut() {
            if w.answering {
                if let Some(thread) = w.thread.take() {
                    let _ = thread.join();
                }
            } else {
                // Never join a stuck worker: dropping its handle detaches it.
                detached = true;
            }
        }
        if detached {
            // A detached worker may wake up and still write through its raw pointers, so the
            // storage they point into must outlive it: leak it (only on this failure path).
            std::mem::forget(std::mem::take(&mut self.batch));
            std::mem::forget(std::mem::take(&mut self.actions));
        }
    }
}

/// How a reset seeds the sub-environments.
#[derive(Clone, Debug)]
enum Seeding {
    /// Sub-environment `i` gets `base + i` (wrapping).
    Base(u64),
    /// `reset(None)`: each environment continues its own stream.
    Continue,
    /// Sub-environment `i` gets `seeds[i]` (`None`: it continues its stream).
    Each(std::sync::Arc<[Option<u64>]>),
}

/// What a chunk is asked to do.
#[derive(Clone, Debug)]
enum Job {
    Reset(Seeding),
    /// Step with the staged actions.
    Step,
    /// Each sub-environment's saved state into its slot (by global index).
    Save(Arc<Mutex<Vec<Option<EnvState>>>>),
    /// Each sub-environment back into its saved state (by global index).
    Restore(Arc<[EnvState]>),
}

/// A message to a worker: exactly one reply follows each `Run`.
#[derive(Clone, Debug)]
enum Cmd {
    Run(Job),
    Close,
}

enum Backend {
    Inline(Chunk),
    /// The calling thread steps `local` (the first chunk) while the pool steps the rest: the
    /// calling thread would otherwise idle, and on a 2-core machine a third busy thread costs
    /// more in context switches than it gives. A never-returning environment in the local chunk
    /// blocks the caller, as it would inline; failures and panics there are caught as anywhere.
    /// `local` is `None` only while `VecEnv::new` builds the pool.
    Threads {
        local: Option<(Chunk, ChunkRows)>,
        pool: Pool,
    },
}

/// The main thread's handle on one worker thread.
struct Worker {
    /// The chunk's number (chunk 0 is the calling thread's).
    index: usize,
    first: usize,
    end: usize,
    commands: Sender<Cmd>,
    replies: Receiver<Result<(), EnvError>>,
    thread: Option<JoinHandle<()>>,
    /// False once the worker missed a deadline or died: it may still be running.
    answering: bool,
}

/// `[first, end)` of each of `workers` contiguous chunks, sizes differing by at most one.
fn chunk_bounds(n: usize, workers: usize) -> impl Iterator<Item = (usize, usize)> {
    let (base, extra) = (n / workers, n % workers);
    (0..workers).map(move |k| {
        let first = k * base + k.min(extra);
        (first, first + base + usize::from(k < extra))
    })
}

/// The worker threads, and the count-down that wakes the main thread once per step.
///
/// Hand-offs dominate a step when environments are cheap: a pendulum step takes about a
/// microsecond, waking a parked thread on a 2-vCPU VM can take tens. So a step costs at most one
/// wake-up of the main thread (workers count `busy` down and only the last one sends on `done`),
/// and idle workers poll for the next command for a short while before they park.
struct Pool {
    workers: Vec<Worker>,
    /// Workers still running the current job.
    busy: Arc<AtomicUsize>,
    done_tx: Sender<()>,
    done: Receiver<()>,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        let (done_tx, done) = bounded(1);
        Self { workers: Vec::with_capacity(capacity), busy: Arc::new(AtomicUsize::new(0)), done_tx, done }
    }

    fn spawn(
        &mut self,
        worker: usize,
        first: usize,
        end: usize,
        chunk: Chunk,
        rows: ChunkRows,
    ) -> Result<(), EnvError> {
        let (commands, command_rx) = bounded(1);
        let (reply_tx, replies) = bounded(1);
        let link = Link { worker, first, end, replies: reply_tx, busy: self.busy.clone(), done: self.done_tx.clone() };
        let thread = std::thread::Builder::new()
            .name(format!("vecenv-worker-{worker}"))
            .spawn(move || worker_loop(chunk, rows, command_rx, link))
            .map_err(|e| EnvError::Worker { worker, first, end, cause: format!("cannot spawn the thread: {e}") })?;
        self.workers.push(Worker {
            index: worker,
            first,
            end,
            commands,
            replies,
            thread: Some(thread),
            answering: true,
        });
        Ok(())
    }

    /// Sends `job` to every worker; [`wait`](Self::wait) collects the replies.
    fn start(&mut self, job: &Job) {
        // Every worker is idle here (the previous job was fully answered, or we are poisoned).
        self.busy.store(self.workers.len(), Ordering::Relaxed);
        for w in &mut self.workers {
            // An idle worker's one-slot channel is empty, so this never blocks; failing means
            // the worker is gone, and it will not count itself down.
            w.answering = w.commands.try_send(Cmd::Run(job.clone())).is_ok();
            if !w.answering {
                self.busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Waits, until one shared deadline, for every worker to finish the job sent by `start`.
    /// Returns the first error in worker order.
    fn wait(&mut self, timeout: Duration) -> Result<(), EnvError> {
        // Poll, yielding the core to the workers, before parking: on a VM, waking a parked
        // thread on an idle virtual CPU costs tens of microseconds, as long as a whole step of
        // 16 environments. Yielding keeps this thread from taking a worker's core.
        let start = Instant::now();
        while self.busy.load(Ordering::Acquire) > 0 && start.elapsed() < MAIN_POLL_WINDOW {
            std::thread::yield_now();
        }
        let deadline = start + timeout;
        // A stale `done` (sent after we already saw 0) only costs one more turn of this loop.
        while self.busy.load(Ordering::Acquire) > 0 {
            match self.done.recv_deadline(deadline) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.done.try_recv(); // this step's `done`, if we did not need it
        let mut first_error = None;
        for w in self.workers.iter_mut() {
            let cause = match (w.answering, w.replies.try_recv()) {
                (true, Ok(Ok(()))) => continue,
                (true, Ok(Err(e))) => {
                    first_error.get_or_insert(e);
                    continue;
                }
                (true, Err(TryRecvError::Empty)) => {
                    format!("no reply within {timeout:?} (a stuck sub-environment?); the thread is left detached")
                }
                _ => "the worker thread has exited".to_string(),
            };
            w.answering = false;
            first_error.get_or_insert(EnvError::Worker { worker: w.index, first: w.first, end: w.end, cause });
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A worker's way back to the main thread.
struct Link {
    worker: usize,
    first: usize,
    end: usize,
    replies: Sender<Result<(), EnvError>>,
    busy: Arc<AtomicUsize>,
    done: Sender<()>,
}

impl Link {
    /// Replies, then counts down; the last worker wakes the main thread. `false` once the
    /// VecEnv is gone.
    fn reply(&self, reply: Result<(), EnvError>) -> bool {
        // The reply is queued before the count-down, so a main thread that sees 0 finds it.
        let sent = self.replies.send(reply).is_ok();
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.try_send(());
        }
        sent
    }
}

/// How long the main thread polls for the workers to finish before parking: longer than a
/// typical vector step, so that in a rollout loop it never has to be woken.
const MAIN_POLL_WINDOW: Duration = Duration::from_millis(2);

/// How long an idle worker polls for its next command before parking: longer than the main
/// thread's turn-around in a tight rollout loop, short next to a policy's forward pass.
const POLL_WINDOW: Duration = Duration::from_micros(50);

/// The next job, or `None` on `Close` or when the VecEnv is gone.
fn next_job(commands: &Receiver<Cmd>) -> Option<Job> {
    let start = Instant::now();
    let cmd = loop {
        match commands.try_recv() {
            Ok(cmd) => break Ok(cmd),
            Err(TryRecvError::Disconnected) => return None,
            // Yield rather than spin: with as many cores as workers, the main thread (just
            // woken by the last reply) needs this core.
            Err(TryRecvError::Empty) if start.elapsed() < POLL_WINDOW => std::thread::yield_now(),
            Err(TryRecvError::Empty) => break commands.recv(),
        }
    };
    match cmd {
        Ok(Cmd::Run(job)) => Some(job),
        Ok(Cmd::Close) | Err(_) => None,
    }
}

/// A worker thread: runs each job on its chunk and replies, until `Close` or the VecEnv is gone.
fn worker_loop(mut chunk: Chunk, rows: ChunkRows, commands: Receiver<Cmd>, link: Link) {
    while let Some(job) = next_job(&commands) {
        // SAFETY: the main thread sent this command after its last access to the batch storage
        // and touches it again only after our reply (or never, once we miss the deadline); the
        // views are dropped inside `run`, before the reply is sent. See `ChunkRows`.
        let (actions, out) = unsafe { rows.views() };
        // Environment calls are guarded inside `run`; this catches a bug of ours, so that the
        // worker still replies and the main thread never waits for the deadline in vain.
        let reply = catch_unwind(AssertUnwindSafe(|| chunk.run(job, actions, out))).unwrap_or_else(|payload| {
            Err(EnvError::Worker {
                worker: link.worker,
                first: link.first,
                end: link.end,
                cause: format!("panicked: {}", panic_message(&*payload)),
            })
        });
        if !link.reply(reply) {
            break;
        }
    }
}

/// A contiguous chunk of sub-environments, owned by a worker thread (or by the VecEnv inline).
struct Chunk {
    /// Global index of `envs[0]`.
    first: usize,
    envs: Vec<Box<dyn Env>>,
    space: ObsSpace,
    /// Reused for every sub-environment so that stepping allocates no actions.
    action: Action,
}

impl Chunk {
    fn new(first: usize, envs: Vec<Box<dyn Env>>, space: &ObsSpace, action_space: &ActionSpace) -> Self {
        let action = match action_space {
            ActionSpace::Box { low, .. } => Action::Continuous(vec![0.0; low.len()]),
            ActionSpace::Discrete(_) => Action::Discrete(0),
        };
        Self { first, envs, space: space.clone(), action }
    }

    /// The one chunk-stepping routine, shared by the inline and threaded paths. Stops at the
    /// first failure (the VecEnv is poisoned by it anyway).
    fn run(&mut self, job: Job, actions: ActionsIn<'_>, mut out: ChunkOut<'_>) -> Result<(), EnvError> {
        match job {
            Job::Reset(seeding) => self.reset(seeding, &mut out),
            Job::Step => self.step(actions, &mut out),
            Job::Save(slots) => {
                let mut states = Vec::with_capacity(self.envs.len());
                for (j, env) in self.envs.iter().enumerate() {
                    states.push(guarded(self.first + j, || Ok(env.save_state()))?);
                }
                let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
                for (j, state) in states.into_iter().enumerate() {
                    slots[self.first + j] = state;
                }
                Ok(())
            }
            Job::Restore(states) => {
                for (j, env) in self.envs.iter_mut().enumerate() {
                    let index = self.first + j;
                    guarded(index, || env.restore_state(&states[index]))?;
                }
                Ok(())
            }
        }
    }

    fn reset(&mut self, seeding: Seeding, out: &mut ChunkOut<'_>) -> Result<(), EnvError> {
        for (j, env) in self.envs.iter_mut().enumerate() {
            let index = self.first + j;
            let seed = match &seeding {
                Seeding::Base(base) => Some(base.wrapping_add(index as u64)),
                Seeding::Continue => None,
                Seeding::Each(seeds) => seeds[index],
            };
            let (obs, info) = guarded(index, || env.reset(seed))?;
            check_obs(&self.space, index, &obs)?;
            out.write_obs(j, &obs);
            out.rewards[j] = 0.0;
            out.terminated[j] = false;
            out.truncated[j] = false;
            out.infos[j] = info;
            out.final_obs[j] = None;
        }
        Ok(())
    }

    fn step(&mut self, actions: ActionsIn<'_>, out: &mut ChunkOut<'_>) -> Result<(), EnvError> {
        for (j, env) in self.envs.iter_mut().enumerate() {
            let index = self.first + j;
            match (&mut self.action, actions) {
                (Action::Continuous(a), ActionsIn::Continuous { values, dim }) => {
                    a.copy_from_slice(&values[j * dim..(j + 1) * dim])
                }
                (Action::Discrete(a), ActionsIn::Discrete(values)) => *a = values[j],
                _ => unreachable!("staged actions always match the action space"),
            }
            let action = &self.action;
            let step = guarded(index, || env.step(action))?;
            check_obs(&self.space, index, &step.obs)?;
            if step.done() {
                // Same-step autoreset: keep the last observation, hand out the new episode's first.
                let (first_obs, _reset_info) = guarded(index, || env.reset(None))?;
                check_obs(&self.space, index, &first_obs)?;
                out.write_obs(j, &first_obs);
                out.final_obs[j] = Some(step.obs);
            } else {
                out.write_obs(j, &step.obs);
                out.final_obs[j] = None;
            }
            out.rewards[j] = step.reward;
            out.terminated[j] = step.terminated;
            out.truncated[j] = step.truncated;
            out.infos[j] = step.info;
        }
        Ok(())
    }
}

/// Runs an environment call, turning its error or panic into [`EnvError::SubEnv`].
fn guarded<T>(index: usize, call: impl FnOnce() -> Result<T, EnvError>) -> Result<T, EnvError> {
    // AssertUnwindSafe: after a panic the environment is never used again (the VecEnv is poisoned).
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(EnvError::SubEnv { index, cause: e.to_string() }),
        Err(payload) => Err(EnvError::SubEnv { index, cause: format!("panicked: {}", panic_message(&*payload)) }),
    }
}

/// Checks what the batch buffers rely on: modality count, dtypes and lengths (not bounds:
/// `check_env` covers those, and checking them every step would cost).
fn check_obs(space: &ObsSpace, index: usize, obs: &Obs) -> Result<(), EnvError> {
    let bad = |why: String| Err(EnvError::SubEnv { index, cause: format!("returned a malformed observation: {why}") });
    if obs.data.len() != space.len() || obs.present.len() != space.len() {
        return bad(format!(
            "{} modalities and {} presence flags, the space declares {}",
            obs.data.len(),
            obs.present.len(),
            space.len()
        ));
    }
    for ((name, spec), data) in space.iter().zip(&obs.data) {
        if data.dtype() != spec.dtype || data.len() != spec.numel() {
            return bad(format!(
                "modality `{name}` holds {} {} values, the space declares {} {} values",
                data.len(),
                data.dtype(),
                spec.numel(),
                spec.dtype
            ));
        }
    }
    Ok(())
}

/// One chunk's actions.
#[derive(Clone, Copy)]
enum ActionsIn<'a> {
    Continuous { values: &'a [f32], dim: usize },
    Discrete(&'a [i64]),
}

/// The VecEnv's copy of the current action batch.
enum StagedActions {
    Continuous { values: Vec<f32>, dim: usize },
    Discrete(Vec<i64>),
}

impl Default for StagedActions {
    fn default() -> Self {
        StagedActions::Discrete(Vec::new())
    }
}

impl StagedActions {
    fn zeros(space: &ActionSpace, num_envs: usize) -> Self {
        match space {
            ActionSpace::Box { low, .. } => {
                StagedActions::Continuous { values: vec![0.0; num_envs * low.len()], dim: low.len() }
            }
            ActionSpace::Discrete(_) => StagedActions::Discrete(vec![0; num_envs]),
        }
    }

    /// Copies `actions` in place (the buffers keep their address), after checking kind and length.
    fn load(&mut self, actions: &BatchActions, num_envs: usize) -> Result<(), String> {
        match (self, actions) {
            (StagedActions::Continuous { values, dim }, BatchActions::Continuous(a)) => {
                if a.len() != values.len() {
                    return Err(format!(
                        "expected {} continuous values ({num_envs} environments x {dim}), got {}",
                        values.len(),
                        a.len()
                    ));
                }
                values.copy_from_slice(a);
            }
            (StagedActions::Discrete(values), BatchActions::Discrete(a)) => {
                if a.len() != values.len() {
                    return Err(format!(
                        "expected {} discrete actions (one per environment), got {}",
                        values.len(),
                        a.len()
                    ));
                }
                values.copy_from_slice(a);
            }
            (StagedActions::Continuous { values, dim }, BatchActions::Discrete(a)) => {
                return Err(format!(
                    "expected {} continuous values ({num_envs} environments x {dim}), got {} discrete actions",
                    values.len(),
                    a.len()
                ));
            }
            (StagedActions::Discrete(values), BatchActions::Continuous(a)) => {
                return Err(format!(
                    "expected {} discrete actions (one per environment), got {} continuous values",
                    values.len(),
                    a.len()
                ));
            }
        }
        Ok(())
    }

    fn view(&self) -> ActionsIn<'_> {
        match self {
            StagedActions::Continuous { values, dim } => ActionsIn::Continuous { values, dim: *dim },
            StagedActions::Discrete(values) => ActionsIn::Discrete(values),
        }
    }
}

/// One modality's rows of a chunk.
enum RowsMut<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

/// Mutable views of one chunk's rows of the batch: everything `Chunk::run` writes.
struct ChunkOut<'a> {
    obs: Vec<RowsMut<'a>>,
    present: &'a mut [bool],
    rewards: &'a mut [f64],
    terminated: &'a mut [bool],
    truncated: &'a mut [bool],
    infos: &'a mut [Info],
    final_obs: &'a mut [Option<Obs>],
}

impl<'a> ChunkOut<'a> {
    /// The whole batch as one chunk: the inline path, no `unsafe` needed.
    fn whole(batch: &'a mut VecStep) -> Self {
        Self {
            obs: batch
                .obs
                .buffers
                .iter_mut()
                .map(|b| match b {
                    ModalityData::U8(v) => RowsMut::U8(v),
                    ModalityData::F32(v) => RowsMut::F32(v),
                })
                .collect(),
            present: &mut batch.obs.present,
            rewards: &mut batch.rewards,
            terminated: &mut batch.terminated,
            truncated: &mut batch.truncated,
            infos: &mut batch.infos,
            final_obs: &mut batch.final_obs,
        }
    }

    /// Copies `obs` (already checked against the space) into row `j`.
    fn write_obs(&mut self, j: usize, obs: &Obs) {
        for (rows, data) in self.obs.iter_mut().zip(&obs.data) {
            match (rows, data) {
                (RowsMut::U8(r), ModalityData::U8(d)) => r[j * d.len()..(j + 1) * d.len()].copy_from_slice(d),
                (RowsMut::F32(r), ModalityData::F32(d)) => r[j * d.len()..(j + 1) * d.len()].copy_from_slice(d),
                _ => unreachable!("dtypes are checked by check_obs"),
            }
        }
        let m = obs.present.len();
        self.present[j * m..(j + 1) * m].copy_from_slice(&obs.present);
    }
}

/// Raw pointers to rows `[first, end)` of a VecEnv's batch storage (`VecStep` and staged
/// actions), handed to the chunk's worker once, at start-up.
///
/// `views`, the `Send` impl below and the one call of `views` in `worker_loop` are the module's
/// only `unsafe`; they let workers write their rows in place, so the main thread never copies
/// the batch. Why it is sound:
/// - **Valid memory.** The pointers come from `Vec::as_mut_ptr` on buffers that `VecEnv::new`
///   allocates once; the VecEnv never resizes or replaces them while it lives (it only writes
///   elements), so they never move. If a worker is left detached (stuck), `Drop` leaks the
///   storage so it outlives that worker.
/// - **No overlap between workers.** Chunks are disjoint index ranges, so the slices of two
///   workers never share an element.
/// - **No overlap with the main thread.** A worker builds its views after receiving a command
///   and drops them before sending its reply; the main thread sends the command after its last
///   access to the storage, and accesses it again only after every worker has replied. The
///   command channel, then the reply channel and the release/acquire `busy` count-down order
///   these accesses (happens-before). A worker that misses its deadline poisons the VecEnv,
///   which then never touches the storage again.
/// - **Send.** The elements (`u8`, `f32`, `bool`, `f64`, `Info`, `Option<Obs>`, `f32`/`i64`
///   actions) are all `Send`, so writing and dropping them on a worker thread is fine.
struct ChunkRows {
    len: usize,
    obs: Vec<RawRows>,
    present: *mut bool,
    modalities: usize,
    rewards: *mut f64,
    terminated: *mut bool,
    truncated: *mut bool,
    infos: *mut Info,
    final_obs: *mut Option<Obs>,
    actions: RawActions,
}

/// A modality's rows: pointer to the chunk's first element, and elements per environment.
enum RawRows {
    U8(*mut u8, usize),
    F32(*mut f32, usize),
}

enum RawActions {
    Continuous(*const f32, usize),
    Discrete(*const i64),
}

// SAFETY: the pointers are only dereferenced under the protocol documented on `ChunkRows`.
unsafe impl Send for ChunkRows {}

impl ChunkRows {
    fn new(batch: &mut VecStep, actions: &mut StagedActions, first: usize, end: usize) -> Self {
        // `wrapping_add` keeps this safe; the offsets are in bounds (`end <= num_envs`).
        let obs = batch
            .obs
            .buffers
            .iter_mut()
            .map(|b| {
                let numel = b.len() / batch.rewards.len();
                match b {
                    ModalityData::U8(v) => RawRows::U8(v.as_mut_ptr().wrapping_add(first * numel), numel),
                    ModalityData::F32(v) => RawRows::F32(v.as_mut_ptr().wrapping_add(first * numel), numel),
                }
            })
            .collect();
        let modalities = batch.obs.buffers.len();
        Self {
            len: end - first,
            obs,
            present: batch.obs.present.as_mut_ptr().wrapping_add(first * modalities),
            modalities,
            rewards: batch.rewards.as_mut_ptr().wrapping_add(first),
            terminated: batch.terminated.as_mut_ptr().wrapping_add(first),
            truncated: batch.truncated.as_mut_ptr().wrapping_add(first),
            infos: batch.infos.as_mut_ptr().wrapping_add(first),
            final_obs: batch.final_obs.as_mut_ptr().wrapping_add(first),
            actions: match actions {
                StagedActions::Continuous { values, dim } => {
                    RawActions::Continuous(values.as_mut_ptr().wrapping_add(first * *dim), *dim)
                }
                StagedActions::Discrete(values) => RawActions::Discrete(values.as_mut_ptr().wrapping_add(first)),
            },
        }
    }

    /// This chunk's actions and output rows.
    ///
    /// # Safety
    /// The caller must hold exclusive access to these rows for the lifetime of the views, as
    /// described on [`ChunkRows`] (between receiving a command and replying to it).
    unsafe fn views(&self) -> (ActionsIn<'_>, ChunkOut<'_>) {
        let n = self.len;
        // SAFETY: each pointer addresses `n` rows of its buffer, valid and exclusively ours by
        // the caller's contract.
        unsafe {
            let actions = match self.actions {
                RawActions::Continuous(p, dim) => {
                    ActionsIn::Continuous { values: slice::from_raw_parts(p, n * dim), dim }
                }
                RawActions::Discrete(p) => ActionsIn::Discrete(slice::from_raw_parts(p, n)),
            };
            let obs = self
                .obs
                .iter()
                .map(|rows| match *rows {
                    RawRows::U8(p, numel) => RowsMut::U8(slice::from_raw_parts_mut(p, n * numel)),
                    RawRows::F32(p, numel) => RowsMut::F32(slice::from_raw_parts_mut(p, n * numel)),
                })
                .collect();
            let out = ChunkOut {
                obs,
                present: slice::from_raw_parts_mut(self.present, n * self.modalities),
                rewards: slice::from_raw_parts_mut(self.rewards, n),
                terminated: slice::from_raw_parts_mut(self.terminated, n),
                truncated: slice::from_raw_parts_mut(self.truncated, n),
                infos: slice::from_raw_parts_mut(self.infos, n),
                final_obs: slice::from_raw_parts_mut(self.final_obs, n),
            };
            (actions, out)
        }
    }
}
