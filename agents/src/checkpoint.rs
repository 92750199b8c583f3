//! What every training loop shares: its error type, and checkpoints in the run directory.
//!
//! A checkpoint is a directory `checkpoints/<name>/` holding the algorithm's record files and
//! `state.toml` ([`CheckpointState`]); `checkpoint.toml` points at the newest complete one and is
//! replaced atomically once that directory is fully written, so a crash mid-write leaves the
//! previous checkpoint in force.

use std::io;
use std::path::{Path, PathBuf};

use burn::record::{Record, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use m3ixup_envs::{is_registered, make, registered_names, ActionSpace, EnvError, ObsSpace};

use crate::encoder::EncoderError;
use crate::losses::{LossTerm, M3ixupLossConfig};
use crate::pretrain::{CheckpointRecorder, EnvSection, LossKind, LossSection, PretrainError};
use crate::replay::ReplayError;
use crate::run::{write_atomic, RunDir};

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

    /// The effective auxiliary loss of an `[aux]` section, checked (every algorithm's `aux`).
    pub fn checked_aux(aux: &LossSection) -> Result<M3ixupLossConfig, Self> {
        let loss = aux.effective().map_err(|e| TrainError::config("aux", e.to_string()))?;
        loss.validate().map_err(|e| TrainError::config(&format!("aux.{}", e.field), e.reason))?;
        if aux.gmc_with_other_terms() {
            return Err(TrainError::config(
                "aux.terms",
                "kind = \"gmc\" uses the GMC term alone: drop `terms` or use kind = \"m3ixup\"",
            ));
        }
        if aux.kind == LossKind::M3ixup && !LossTerm::ALL.iter().any(|&t| loss.enabled(t)) {
            return Err(TrainError::config(
                "aux.terms",
                "every M3ixup term is switched off: use kind = \"none\" for no auxiliary loss",
            ));
        }
        Ok(loss)
    }

    /// Checks that `env` names a registered environment whose parameters build.
    pub fn checked_env(env: &EnvSection) -> Result<Box<dyn m3ixup_envs::Env>, Self> {
        if !is_registered(&env.name) {
            return Err(TrainError::config(
                "env.name",
                format!("unknown environment `{}` (registered: {})", env.name, registered_names().join(", ")),
            ));
        }
        make(&env.name, &env.params).map_err(|e| TrainError::config("env.params", e.to_string()))
    }

    /// For `map_err`: an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| TrainError::Io { context, source }
    }
}

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
}

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
    Ok(Some(run_dir.join(p.dir)))
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
    for (file, bytes) in files {
        let path = dir.join(file);
        write_atomic(&path, bytes).map_err(TrainError::io(format!("cannot write {}", path.display())))?;
    }
    let state_path = dir.join(STATE_FILE);
    let text = toml::to_string(state)
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

/// Reads a record written by [`record_bytes`].
pub fn load_record<R: Record<B>, B: Backend>(path: &Path, device: &B::Device) -> Result<R, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(format!("cannot read {}", path.display())))?;
    CheckpointRecorder::default()
        .load(bytes, device)
        .map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() })
}

/// Reads a checkpoint's state (`state.toml`).
pub fn load_checkpoint_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(format!("cannot read {}", path.display())))?;
    toml::from_str(&text).map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
}
