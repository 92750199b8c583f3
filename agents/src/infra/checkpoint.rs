//! What every training loop shares: its error type, and checkpoints in the run directory.
//!
//! A checkpoint is a directory `checkpoints/<name>/` holding the algorithm's record files and
//! `state.toml` ([`CheckpointState`]); `checkpoint.toml` points at the newest complete one and is
//! replaced atomically once that directory is fully written, so a crash mid-write leaves the
//! previous checkpoint in force.

use std::collections::BTreeMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{Record, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{ActionSpace, EnvError, ObsSpace};

use crate::algorithms::replay::ReplayError;
use crate::infra::run::{write_atomic, RunDir};
use crate::representation::encoder::EncoderError;
use crate::representation::pretrain::PretrainError;

/// Errors of `train` (every algorithm); config errors name the field.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config `{field}`: {reason}")]
    Config { field: String, reason: String },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("pretrained encoder: {0}")]
    Pretrained(#[from] PretrainError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A PPO loss became NaN or infinite; the last checkpoint (if any) is left as it was.
    #[error(
        "the loss is not finite at update {update}, epoch {epoch}, minibatch {minibatch} ({parts}); \
         training stopped, the last good checkpoint (update {last_checkpoint}) is intact"
    )]
    Diverged { update: usize, epoch: usize, minibatch: usize, parts: String, last_checkpoint: usize },
    /// An off-policy loss became NaN or infinite.
    #[error(
        "the loss is not finite at environment step {global_step} ({parts}); training stopped, the last \
         good checkpoint is intact"
    )]
    DivergedAt { global_step: u64, parts: String },
}

impl TrainError {
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        TrainError::Config { field: field.into(), reason: reason.into() }
    }

    /// For `map_err`: an encoder or heads config error, its field prefixed with `section`.
    pub fn in_section(section: &str) -> impl FnOnce(EncoderError) -> Self + '_ {
        move |e| match e {
            EncoderError::InvalidConfig { field, reason } => TrainError::config(&format!("{section}.{field}"), reason),
            other => TrainError::Encoder(other),
        }
    }

    /// For `map_err`: an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| TrainError::Io { context, source }
    }
}

/// How checkpoint records (weights, optimiser state) are encoded: burn's named MessagePack at
/// full precision, so a resumed run continues from the exact values.
pub(crate) type CheckpointRecorder = burn::record::NamedMpkBytesRecorder<burn::record::FullPrecisionSettings>;

/// Points at the newest complete checkpoint directory; replaced atomically once that directory
/// is fully written, so a crash mid-write leaves the previous checkpoint in force.
pub const CHECKPOINT_POINTER: &str = "checkpoint.toml";
pub const AGENT_FILE: &str = "agent.mpk";
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";
pub const STATE_FILE: &str = "state.toml";

/// What a checkpoint records besides the weights: enough to resume and to evaluate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub algo: String,
    /// Updates completed.
    pub update: usize,
    /// Environment steps completed.
    pub global_step: u64,
    pub env_name: String,
    pub observation_space: ObsSpace,
    pub action_space: ActionSpace,
    /// The run's config, as TOML.
    pub config: String,
    /// Wall-clock seconds of training up to this checkpoint, over every process that worked on
    /// the run (a resumed run's `time/elapsed_seconds` continues from it).
    #[serde(default)]
    pub elapsed_seconds: f64,
    /// Each file's checksum ([`checksum`]), written with the checkpoint and checked when it is
    /// loaded (checkpoints from before checksums have none).
    #[serde(default)]
    pub checksums: BTreeMap<String, String>,
}

impl CheckpointState {
    /// The state of a run that has not trained yet: no update, no step, no time, no files.
    pub fn fresh(
        algo: &str,
        env_name: &str,
        observation_space: ObsSpace,
        action_space: ActionSpace,
        config: String,
    ) -> Self {
        Self {
            algo: algo.to_string(),
            update: 0,
            global_step: 0,
            env_name: env_name.to_string(),
            observation_space,
            action_space,
            config,
            elapsed_seconds: 0.0,
            checksums: BTreeMap::new(),
        }
    }
}

/// The checksum recorded for a checkpoint file: CRC-32 of its bytes, which catches a corrupt,
/// truncated or replaced file (it is not a defence against tampering).
pub fn checksum(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}

/// The directory under a run that holds its checkpoints; `checkpoint.toml` may point nowhere else.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// Reads `checkpoint.toml` of a run directory: the newest checkpoint's directory.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    let pointer = run_dir.join(CHECKPOINT_POINTER);
    let text = match std::fs::read_to_string(&pointer) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(format!("cannot read {}", pointer.display()))(e)),
    };
    #[derive(Deserialize)]
    struct Pointer {
        dir: String,
    }
    let p: Pointer =
        toml::from_str(&text).map_err(|e| TrainError::Checkpoint { path: pointer.clone(), reason: e.to_string() })?;
    // Only `checkpoints/<name>` of this run: a pointer copied or edited to lead elsewhere would
    // make resume read another run's checkpoint, and then delete it as "the previous" one.
    let relative = Path::new(&p.dir);
    let components: Vec<Component> = relative.components().collect();
    let inside =
        matches!(components.as_slice(), [Component::Normal(top), Component::Normal(_)] if *top == CHECKPOINTS_DIR);
    if !inside {
        return Err(TrainError::Checkpoint {
            path: pointer,
            reason: format!(
                "`dir = {:?}` is not a checkpoint of this run (expected `{CHECKPOINTS_DIR}/<name>`, relative to the run directory)",
                p.dir
            ),
        });
    }
    Ok(Some(run_dir.join(relative)))
}

/// Removes what an interrupted checkpoint write left behind: directories under `checkpoints/`
/// other than the one `checkpoint.toml` points at (a checkpoint written but never pointed at, or
/// a previous one not yet removed). Call it holding the run's lock ([`RunDir`]), before resuming.
pub fn remove_orphan_checkpoints(run: &RunDir) -> Result<Vec<PathBuf>, TrainError> {
    let current = latest_checkpoint(run.path())?;
    let dir = run.file(CHECKPOINTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(format!("cannot list {}", dir.display()))(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry.map_err(TrainError::io(format!("cannot list {}", dir.display())))?.path();
        if path.is_dir() && current.as_ref() != Some(&path) {
            std::fs::remove_dir_all(&path).map_err(TrainError::io(format!("cannot remove {}", path.display())))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Writes `files` (name, bytes) and `state.toml` into `checkpoints/<name>/`, each atomically, then
/// points `checkpoint.toml` at it, then removes the previous checkpoint directory.
pub fn write_checkpoint(
    run: &RunDir,
    name: &str,
    state: &CheckpointState,
    files: &[(&str, Vec<u8>)],
) -> Result<PathBuf, TrainError> {
    let previous = latest_checkpoint(run.path())?;
    let dir = run.file(name);
    std::fs::create_dir_all(&dir).map_err(TrainError::io(format!("cannot create {}", dir.display())))?;
    let mut state = state.clone();
    for (file, bytes) in files {
        let path = dir.join(file);
        write_atomic(&path, bytes).map_err(TrainError::io(format!("cannot write {}", path.display())))?;
        state.checksums.insert(file.to_string(), checksum(bytes));
    }
    let state_path = dir.join(STATE_FILE);
    let text = toml::to_string(&state)
        .map_err(|e| TrainError::Checkpoint { path: state_path.clone(), reason: e.to_string() })?;
    write_atomic(&state_path, text.as_bytes())
        .map_err(TrainError::io(format!("cannot write {}", state_path.display())))?;
    let pointer = run.file(CHECKPOINT_POINTER);
    write_atomic(&pointer, format!("dir = \"{name}\"\n").as_bytes())
        .map_err(TrainError::io(format!("cannot write {}", pointer.display())))?;
    if let Some(previous) = previous.filter(|p| *p != dir) {
        let _ = std::fs::remove_dir_all(previous);
    }
    Ok(dir)
}

/// A module's or optimiser's record as checkpoint bytes (`path`: where they will go, for errors).
pub fn record_bytes<R: Record<B>, B: Backend>(record: R, path: &Path) -> Result<Vec<u8>, TrainError> {
    CheckpointRecorder::default()
        .record(record, ())
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })
}

/// Reads a record written by [`record_bytes`], checking its bytes against `expected` (the
/// checksum its checkpoint recorded, if any).
pub fn load_record<R: Record<B>, B: Backend>(
    path: &Path,
    expected: Option<&String>,
    device: &B::Device,
) -> Result<R, TrainError> {
    let bytes = read_checked(path, expected)?;
    CheckpointRecorder::default()
        .load(bytes, device)
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })
}

/// What a training loop keeps besides weights and optimisers, so that a resumed run continues
/// exactly where it stopped (the environments' state, generators, a replay buffer): MessagePack,
/// in which floats and generators round-trip bit for bit.
pub const LOOP_STATE_FILE: &str = "loop.mpk";

/// A loop state as checkpoint bytes (see [`LOOP_STATE_FILE`]).
pub fn loop_state_bytes<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, TrainError> {
    rmp_serde::to_vec(value).map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })
}

/// The replay buffer's file in the checkpoints of off-policy runs (MessagePack, as
/// [`LOOP_STATE_FILE`]; absent with `replay.checkpoint = false`).
pub const REPLAY_FILE: &str = "replay.mpk";

/// The loop state `file` ([`LOOP_STATE_FILE`], [`REPLAY_FILE`]) saved in checkpoint `dir`,
/// checked against its recorded checksum; `None` for a checkpoint written without it.
pub fn load_saved_state<T: DeserializeOwned>(
    dir: &Path,
    state: &CheckpointState,
    file: &str,
) -> Result<Option<T>, TrainError> {
    let path = dir.join(file);
    let expected = state.checksums.get(file);
    if expected.is_none() && !path.exists() {
        return Ok(None);
    }
    let bytes = read_checked(&path, expected)?;
    rmp_serde::from_slice(&bytes).map(Some).map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
}

/// A checkpoint file's bytes, checked against the checksum its checkpoint recorded (if any).
fn read_checked(path: &Path, expected: Option<&String>) -> Result<Vec<u8>, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(format!("cannot read {}", path.display())))?;
    verify_checksum(&bytes, expected).map_err(|reason| TrainError::Checkpoint { path: path.to_path_buf(), reason })?;
    Ok(bytes)
}

/// `Err(reason)` when `bytes` do not have the `expected` checksum.
pub fn verify_checksum(bytes: &[u8], expected: Option<&String>) -> Result<(), String> {
    match expected {
        Some(expected) if *expected != checksum(bytes) => Err(format!(
            "its bytes do not match the checksum its checkpoint recorded ({expected}, found {}): the file is \
             corrupt, cut off or replaced",
            checksum(bytes)
        )),
        _ => Ok(()),
    }
}

/// Loads `record` into `module`, which was built from the checkpoint's own config: a record
/// whose parameters differ in number or shape from the config's is `Err(reason)`, never a
/// silent load (burn takes a mismatching shape as it comes) or a panic (a different number of
/// layers).
pub fn load_into<B: Backend, M: Module<B>>(module: M, record: M::Record) -> Result<M, String> {
    let expected = parameter_shapes(&module);
    // burn asserts (panics) on a record with another number of layers: caught, and reported as
    // this error only (the panic hook, which would print it as a crash, is silenced meanwhile).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = catch_unwind(AssertUnwindSafe(|| module.load_record(record)));
    std::panic::set_hook(hook);
    let loaded =
        loaded.map_err(|panic| format!("its parameters do not fit the config's network ({})", panic_text(&*panic)))?;
    let found = parameter_shapes(&loaded);
    if found.len() != expected.len() {
        return Err(format!("it holds {} parameter tensors, the config's network has {}", found.len(), expected.len()));
    }
    if let Some(((name, want), (_, got))) = expected.iter().zip(&found).find(|(a, b)| a.1 != b.1) {
        return Err(format!(
            "parameter `{name}` has shape {got:?} in the file, {want:?} in the config's network (a checkpoint of another config?)"
        ));
    }
    Ok(loaded)
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Every parameter of `module`, by its path (`encoder.pixels.0.weight`), with its shape.
fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    #[derive(Default)]
    struct Shapes {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>)>,
    }
    impl Shapes {
        fn push(&mut self, shape: burn::tensor::Shape) {
            self.out.push((self.path.join("."), shape.to_vec()));
        }
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.push(param.lazy_shape());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.push(param.lazy_shape());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            self.push(param.lazy_shape());
        }
    }
    let mut shapes = Shapes::default();
    module.visit(&mut shapes);
    shapes.out
}

/// [`load_record`] then [`load_into`]: a checkpoint file into the module its config builds.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    expected: Option<&String>,
    device: &B::Device,
) -> Result<M, TrainError> {
    let record = load_record::<M::Record, B>(path, expected, device)?;
    load_into(module, record).map_err(|reason| TrainError::Checkpoint { path: path.to_path_buf(), reason })
}

/// Reads a checkpoint's state (`state.toml`).
pub fn load_checkpoint_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(format!("cannot read {}", path.display())))?;
    toml::from_str(&text).map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
}
