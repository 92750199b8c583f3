//! What every training loop shares, in one place: the run's `config.toml` and metrics files
//! (TensorBoard's event files too, unless the config's `train.tensorboard` is off), its
//! checkpoint state and checkpoints, resume, the run's clock, the progress bar and the rows
//! logged. An algorithm's loop keeps only its own steps (collect, update) and its metrics.
//!
//! ```text
//! let mut harness = Harness::start(run, state, progress, tb, STEP_KEY)?;  // or ::resume(...)
//! for update in ... {
//!     ... collect, learn ...
//!     harness.log(row)?;                                         // + time/elapsed_seconds
//!     harness.checkpoint(&name, files)?;                         // when it is due
//! }
//! let summary = harness.finish(updates, global_step, recent_return);
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::infra::checkpoint::{
    latest_checkpoint, load_checkpoint_state, remove_orphan_checkpoints, write_checkpoint, CheckpointState, TrainError,
    STATE_FILE,
};
use crate::infra::progress::progress_bar;
use crate::infra::run::{MetricsSink, RunDir};

/// One metrics row: `(key, value)` pairs in the CSV's column order.
pub type Row = Vec<(String, f64)>;

/// The key the reinforcement-learning loops log in each row: the x-axis of the metrics (the
/// step of TensorBoard's points, and what a resume trims the rows by). Pretraining has its own
/// (`pretrain/step`).
pub const STEP_KEY: &str = "global_step";

/// Run-time options of a training run that are not part of the experiment.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Progress bar and per-update lines.
    pub verbose: bool,
    /// Continue from the run directory's last checkpoint.
    pub resume: bool,
    /// Stop after this many updates in this process (PPO: rollouts learned from; off-policy:
    /// gradient updates), with a checkpoint there: the run resumes later. `None`: run to the end.
    pub max_updates: Option<usize>,
    /// Called with every metrics row the run logs; the run stops after a row for which it
    /// returns false, with a checkpoint there, as at `max_updates` (Python's `on_update`).
    pub on_row: Option<OnRow>,
    /// Threads of the PPO learner (0 or 1: the calling thread alone). With more, each
    /// minibatch's rows are split into as many shards whose losses and backward passes run in
    /// parallel; the result is the same loss, its float sums in another order, so a run
    /// reproduces exactly with the same count. For backends that compute on one thread (flex).
    pub learner_threads: usize,
}

/// A callback on each logged row ([`TrainOptions::on_row`]): true to go on, false to stop.
#[derive(Clone)]
pub struct OnRow(pub Arc<dyn Fn(&Row) -> bool + Send + Sync>);

impl fmt::Debug for OnRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRow(..)")
    }
}

/// What a training run did, whatever its algorithm.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// The algorithm's updates so far (PPO: rollouts learned from; off-policy: gradient steps).
    pub updates: usize,
    pub global_step: u64,
    /// Seconds this process trained.
    pub wall_seconds: f64,
    /// Environment steps per second in this process, updates included.
    pub sps: f64,
    /// Mean per-step reward of the last metrics row's steps.
    pub last_reward_per_step: f64,
    /// Mean episodic return of the recently finished episodes (NaN if none).
    pub recent_return: f64,
    /// Every row this process logged, in order.
    pub rows: Vec<Row>,
}

fn last_value(rows: &[Row], key: &str) -> f64 {
    rows.last().and_then(|r| r.iter().find(|(k, _)| k == key).map(|(_, v)| *v)).unwrap_or(f64::NAN)
}

/// The progress bar a run draws: hidden unless `verbose`; `total` in `unit`s (steps, epochs).
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub verbose: bool,
    pub total: u64,
    pub unit: &'a str,
}

/// A training run in progress (see the module documentation).
pub struct Harness<'a> {
    run: &'a RunDir,
    metrics: MetricsSink,
    /// The checkpoint state: the loop updates `update` and `global_step`; the harness keeps
    /// `elapsed_seconds`.
    pub state: CheckpointState,
    /// Wall time of the run's earlier processes (a resumed run's clock continues).
    elapsed_before: f64,
    started: Instant,
    process_start_step: u64,
    pub bar: ProgressBar,
    rows: Vec<Row>,
    on_row: Option<OnRow>,
    stop_requested: bool,
}

impl<'a> Harness<'a> {
    /// A new run: writes `state.config` as `config.toml` and creates the metrics files, with
    /// TensorBoard event files when `tensorboard` is set (the config's `train.tensorboard`).
    /// Every row the loop logs has `step_key` (its x-axis: [`STEP_KEY`] in the reinforcement-
    /// learning loops), which grows with `state.global_step`.
    pub fn start(
        run: &'a RunDir,
        state: CheckpointState,
        progress: Progress,
        tensorboard: bool,
        step_key: &str,
    ) -> Result<Self, TrainError> {
        run.write_config(&state.config).map_err(TrainError::io("cannot write config.toml"))?;
        let mut metrics = run.metrics().map_err(TrainError::io("cannot create the metrics files"))?;
        if tensorboard {
            let events = run.tensorboard(step_key).map_err(TrainError::io("cannot remove old TensorBoard files"))?;
            metrics = metrics.with_tensorboard(events);
        }
        Ok(Self::new(run, metrics, state, 0.0, progress))
    }

    /// Continues `run` from its last checkpoint, whose config must be `state.config` (the run's
    /// own `config.toml`). Removes what a killed checkpoint write left, drops the metrics rows
    /// (and TensorBoard points, when `tensorboard` is set) logged after the checkpoint (`step_key`
    /// above its `global_step`), and
    /// continues the clock. Returns the harness, with the checkpoint's state, and the
    /// checkpoint's directory, for the algorithm's weights. A run stopped before its first
    /// checkpoint has nothing to continue from: it starts over (directory `None`).
    pub fn resume(
        run: &'a RunDir,
        state: CheckpointState,
        progress: Progress,
        tensorboard: bool,
        step_key: &str,
    ) -> Result<(Self, Option<PathBuf>), TrainError> {
        let config_differs = |path: PathBuf| TrainError::Checkpoint {
            path,
            reason: "the run's config differs from the one given: resume with the run's own config.toml".into(),
        };
        remove_orphan_checkpoints(run)?;
        let Some(dir) = latest_checkpoint(run.path())? else {
            let config = run.file("config.toml");
            if std::fs::read_to_string(&config).is_ok_and(|saved| saved != state.config) {
                return Err(config_differs(config));
            }
            return Ok((Self::start(run, state, progress, tensorboard, step_key)?, None));
        };
        let saved = load_checkpoint_state(&dir)?;
        if saved.config != state.config {
            return Err(config_differs(dir.join(STATE_FILE)));
        }
        let up_to = saved.global_step as f64;
        let mut metrics = run.resume_metrics(step_key, up_to).map_err(TrainError::io("cannot reopen the metrics"))?;
        if tensorboard {
            let events = run.resume_tensorboard(step_key, up_to);
            metrics = metrics.with_tensorboard(events.map_err(TrainError::io("cannot reopen the TensorBoard files"))?);
        }
        let elapsed = saved.elapsed_seconds;
        let state = CheckpointState { update: saved.update, global_step: saved.global_step, ..state };
        Ok((Self::new(run, metrics, state, elapsed, progress), Some(dir)))
    }

    /// [`Self::resume`] when `resume` is set (the run's own `--resume`), else [`Self::start`]
    /// (no checkpoint directory).
    pub fn open(
        run: &'a RunDir,
        state: CheckpointState,
        progress: Progress,
        tensorboard: bool,
        step_key: &str,
        options: &TrainOptions,
    ) -> Result<(Self, Option<PathBuf>), TrainError> {
        let (mut harness, checkpoint) = if options.resume {
            Self::resume(run, state, progress, tensorboard, step_key)?
        } else {
            (Self::start(run, state, progress, tensorboard, step_key)?, None)
        };
        harness.on_row = options.on_row.clone();
        Ok((harness, checkpoint))
    }

    fn new(run: &'a RunDir, metrics: MetricsSink, state: CheckpointState, elapsed: f64, progress: Progress) -> Self {
        let bar = progress_bar(progress.verbose, progress.total, "", progress.unit);
        bar.set_position(state.global_step.min(progress.total));
        let process_start_step = state.global_step;
        Self {
            run,
            metrics,
            state,
            elapsed_before: elapsed,
            started: Instant::now(),
            process_start_step,
            bar,
            rows: Vec::new(),
            on_row: None,
            stop_requested: false,
        }
    }

    pub fn run(&self) -> &RunDir {
        self.run
    }

    /// Seconds of training over every process that worked on the run.
    pub fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Seconds this process has trained.
    pub fn process_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Environment steps per second in this process.
    pub fn sps(&self) -> f64 {
        (self.state.global_step - self.process_start_step) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Logs `row` (with `time/elapsed_seconds` appended) to both metrics files and keeps it.
    pub fn log(&mut self, mut row: Row) -> Result<(), TrainError> {
        row.push(("time/elapsed_seconds".into(), self.elapsed()));
        self.metrics.log(&row).map_err(TrainError::io("cannot write the metrics"))?;
        if let Some(on_row) = &self.on_row {
            self.stop_requested |= !(on_row.0)(&row);
        }
        self.rows.push(row);
        Ok(())
    }

    /// Whether the [`TrainOptions::on_row`] callback asked the run to stop: the loop then
    /// checkpoints and returns, as at `max_updates`.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// Says that a resumed run starts new episodes: `env` cannot save its state (or the
    /// checkpoint predates saved states), so the run continues, but not exactly as one never
    /// interrupted would.
    pub fn note_fresh_episodes(&self, env: &str) {
        self.note(&format!(
            "`{env}` cannot save its state (or the checkpoint has none): the resumed run starts new episodes"
        ));
    }

    /// Prints `note: {text}` on standard error, above the progress bar.
    pub fn note(&self, text: &str) {
        self.bar.suspend(|| eprintln!("note: {text}"));
    }

    /// The rows logged by this process.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Writes the checkpoint `name` (`checkpoints/...`) with `files` and the current state.
    pub fn checkpoint(&mut self, name: &str, files: &[(&str, Vec<u8>)]) -> Result<PathBuf, TrainError> {
        self.state.elapsed_seconds = self.elapsed();
        write_checkpoint(self.run, name, &self.state, files)
    }

    /// Clears the progress bar and sums the run up: `updates` and `global_step` where the loop
    /// stopped, and the recent episodes' mean return (`None`: the last row's
    /// `charts/episodic_return`).
    pub fn finish(self, updates: usize, global_step: u64, recent_return: Option<f64>) -> TrainSummary {
        self.bar.finish_and_clear();
        let wall_seconds = self.process_seconds();
        TrainSummary {
            run_dir: self.run.path().to_path_buf(),
            updates,
            global_step,
            wall_seconds,
            sps: global_step.saturating_sub(self.process_start_step) as f64 / wall_seconds.max(1e-9),
            last_reward_per_step: last_value(&self.rows, "charts/reward_per_step"),
            recent_return: recent_return.unwrap_or_else(|| last_value(&self.rows, "charts/episodic_return")),
            rows: self.rows,
        }
    }
}
