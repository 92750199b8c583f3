//! Offline pretraining of the encoders: the paper's protocol (docs/M3IXUP.md sections 1 and 4, GMC's
//! training).
//!
//! 1. Collect `data.samples` observations from the environment with a uniform random policy
//!    (20 000 from `multimodal-pendulum` by default), keep those with every modality present, and
//!    split them at random into train and validation sets (90/10).
//! 2. Train the encoder with the GMC loss (`loss.kind = "gmc"`) or the M3ixup loss
//!    (`"m3ixup"`) for `train.epochs` epochs of Adam over shuffled minibatches.
//! 3. After every epoch: validation loss and cross-modal retrieval accuracy per modality (over
//!    validation batches of `train.validation_batch_size` = 128: the fraction of samples whose
//!    unimodal latent z_u has its own joint latent z_M as nearest neighbour among the batch's z_M;
//!    chance is 1/128), one metrics row (a TensorBoard point per key too, unless
//!    `train.tensorboard = false`), and the encoder checkpoint (`encoder.mpk`, written
//!    atomically) with its `encoder.toml` description.
//!
//! [`pretrain`] is the whole loop, top to bottom. [`load_encoder`] reads a checkpoint back.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Int;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use m3ixup_envs::{is_registered, make, registered_names, BatchActions, EnvError, EnvRng, ModalityData, ObsSpace};
use m3ixup_envs::{VecEnv, VecEnvConfig};

use crate::infra::checkpoint::{
    checksum, load_checkpoint_state, load_into, load_record, load_saved_state, loop_state_bytes, record_bytes,
    verify_checksum, CheckpointRecorder, CheckpointState, TrainError, LOOP_STATE_FILE, OPTIMIZER_FILE,
};
use crate::infra::harness::{Harness, Progress, TrainOptions};
use crate::infra::progress::progress_bar;
use crate::infra::run::{write_atomic, RunDir};
use crate::representation::encoder::{EncoderConfig, EncoderError, M3ixupEncoder, MultimodalInput};
use crate::representation::losses::{
    gmc_infonce, m3ixup_loss, project_views, LossTerm, M3ixupLossConfig, M3ixupReport,
};
use crate::representation::sections::{EnvSection, LossKind, LossSection};
use crate::representation::storage::ObsBuffer;

/// File name of the encoder weights in a run directory (burn's named MessagePack, f32).
pub const CHECKPOINT_FILE: &str = "encoder.mpk";
/// File name of the checkpoint's description ([`EncoderMeta`]).
pub const META_FILE: &str = "encoder.toml";
/// Version of the checkpoint layout written by this module.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Mixed into `train.seed` for the mixup draws of the validation loss: the same draws every
/// epoch (so epochs compare), different from the training draws.
const VALIDATION_DRAWS: u64 = 0x5EED_0000_7A11;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `pretrain` config (`configs/pretrain-*.toml`). Defaults: the paper's protocol on the
/// multimodal pendulum with the M3ixup loss, 9 epochs (`configs/pretrain-m3ixup.toml`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// The environment the samples come from.
    pub env: EnvSection,
    /// How many samples, from how many environments, split how.
    pub data: DataConfig,
    /// The encoder architecture (GMC's by default).
    pub encoder: EncoderConfig,
    /// Which loss trains the encoder: `kind`, then the M3ixup loss options.
    pub loss: LossSection,
    /// Optimisation and validation.
    pub train: TrainConfig,
}

/// `[data]`: the random-policy data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Samples to collect, every modality present (GMC and the paper: 20 000).
    pub samples: usize,
    /// Fraction held out for validation, drawn at random (0.1: a 90/10 split).
    pub validation_fraction: f64,
    /// Sub-environments stepped together.
    pub num_envs: usize,
    /// Threads stepping them, the calling thread included (0 or 1: the calling thread alone).
    pub workers: usize,
    /// Seed of the environments (sub-environment i gets seed + i), the random policy and the split.
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { samples: 20_000, validation_fraction: 0.1, num_envs: 16, workers: 0, seed: 0 }
    }
}

/// `[train]`: optimisation and validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training set (GMC: 500; see the configs for what fits in 30 minutes).
    pub epochs: usize,
    /// Minibatch size (GMC: 128). The last partial minibatch of an epoch is dropped.
    pub batch_size: usize,
    /// Adam's learning rate (GMC: 1e-3).
    pub learning_rate: f64,
    /// Seed of the network initialisation, the minibatch order and the mixup draws.
    pub seed: u64,
    /// Batch size of the validation loss and of retrieval (128: chance is 1/128).
    pub validation_batch_size: usize,
    /// Also write the metrics as TensorBoard scalars, one point per epoch
    /// (`events.out.tfevents.*` in the run directory; `agents::infra::run::TensorBoard`).
    pub tensorboard: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 9, batch_size: 128, learning_rate: 1e-3, seed: 0, validation_batch_size: 128, tensorboard: true }
    }
}

impl PretrainConfig {
    /// Checks every value; the error names the field (`loss.alpha`, `loss.input.weight`,
    /// `train.batch_size`, ...).
    pub fn validate(&self) -> Result<(), PretrainError> {
        let bad = |field: &str, reason: String| Err(PretrainError::config(field, reason));
        if !is_registered(&self.env.name) {
            return bad(
                "env.name",
                format!("unknown environment `{}` (registered: {})", self.env.name, registered_names().join(", ")),
            );
        }
        let d = &self.data;
        if !(d.validation_fraction > 0.0 && d.validation_fraction < 1.0) {
            return bad(
                "data.validation_fraction",
                format!("must lie strictly between 0 and 1, got {}", d.validation_fraction),
            );
        }
        if d.num_envs == 0 {
            return bad("data.num_envs", "must be at least 1".into());
        }
        if d.workers > d.num_envs {
            return bad(
                "data.workers",
                format!("{} workers for {} environments: must be at most num_envs", d.workers, d.num_envs),
            );
        }
        let t = &self.train;
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1".into());
        }
        if t.batch_size < 2 {
            return bad(
                "train.batch_size",
                format!("contrastive losses need at least 2 samples per batch, got {}", t.batch_size),
            );
        }
        if t.validation_batch_size < 2 {
            return bad("train.validation_batch_size", format!("must be at least 2, got {}", t.validation_batch_size));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return bad("train.learning_rate", format!("must be a finite number > 0, got {}", t.learning_rate));
        }
        let (train, val) = split_sizes(d.samples, d.validation_fraction);
        if val < 2 {
            return bad(
                "data.samples",
                format!(
                    "{} samples x validation_fraction {} leave {val} for validation; need at least 2",
                    d.samples, d.validation_fraction
                ),
            );
        }
        if train < t.batch_size {
            return bad(
                "data.samples",
                format!("{train} training samples are fewer than train.batch_size = {}", t.batch_size),
            );
        }
        self.encoder.validate().map_err(|e| match e {
            EncoderError::InvalidConfig { field, reason } => PretrainError::config(&format!("encoder.{field}"), reason),
            other => PretrainError::Encoder(other),
        })?;
        self.loss.m3ixup.validate().map_err(|e| PretrainError::config(&format!("loss.{}", e.field), e.reason))?;
        if self.loss.gmc_with_other_terms() {
            return bad(
                "loss.terms",
                "kind = \"gmc\" trains the GMC term alone: drop `terms` or use kind = \"m3ixup\"".into(),
            );
        }
        if self.loss.kind == LossKind::None {
            return bad("loss.kind", "pretraining needs a loss: \"gmc\" or \"m3ixup\"".into());
        }
        if self.loss.m3ixup.joint_gradient == 0.0 {
            return bad(
                "loss.joint_gradient",
                "0 leaves the joint processor without a gradient when pretraining: it is an RL agent's option".into(),
            );
        }
        let effective = self.loss.effective().map_err(|e| PretrainError::config("loss.terms", e.reason))?;
        if !LossTerm::ALL.iter().any(|&t| effective.enabled(t)) {
            return bad("loss.terms", "every loss term is switched off".into());
        }
        Ok(())
    }
}

/// `(train, validation)` sizes of a split: validation gets `round(n * fraction)`.
pub fn split_sizes(samples: usize, validation_fraction: f64) -> (usize, usize) {
    let val = ((samples as f64) * validation_fraction).round() as usize;
    let val = val.min(samples);
    (samples - val, val)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What can stop a pretraining run.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A config value out of range; `field` names the key, e.g. `loss.alpha`.
    #[error("config `{field}`: {reason}")]
    Config { field: String, reason: String },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// A checkpoint that cannot be read, or does not match.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {value}")]
    Diverged { epoch: usize, step: usize, value: f32 },
    /// The run directory, its metrics or its checkpoints (the training harness).
    #[error(transparent)]
    Run(Box<TrainError>),
}

impl From<TrainError> for PretrainError {
    fn from(e: TrainError) -> Self {
        PretrainError::Run(Box::new(e))
    }
}

impl PretrainError {
    pub fn config(field: &str, reason: impl Into<String>) -> Self {
        PretrainError::Config { field: field.to_string(), reason: reason.into() }
    }

    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| PretrainError::Io { context, source }
    }
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// The random-policy data set: complete observations (every modality present) in an
/// [`ObsBuffer`], pixels kept as `u8`.
#[derive(Clone, Debug)]
pub struct SampleSet {
    store: ObsBuffer,
}

impl SampleSet {
    /// Steps a vector of `vec.num_envs` environments `name(params)` with uniform random actions
    /// (drawn from a generator seeded with `vec.seed`) until `samples` observations with every
    /// modality present are stored. Environments are reset with `vec.seed` (sub-environment i:
    /// `seed + i`); episodes restart as they end (same-step autoreset).
    pub fn collect_random(
        name: &str,
        params: &toml::Table,
        samples: usize,
        vec: VecEnvConfig,
        progress: Option<&ProgressBar>,
    ) -> Result<Self, PretrainError> {
        let seed = vec.seed;
        let mut envs = VecEnv::new(vec, |_| make(name, params))?;
        let action_space = envs.action_space().clone();
        let mut store = ObsBuffer::with_capacity(envs.observation_space(), samples);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut obs = envs.reset(Some(seed))?.clone();
        let mut empty_steps = 0;
        while store.len() < samples {
            let before = store.len();
            for i in 0..envs.num_envs() {
                if store.len() < samples && obs.env_present(i).iter().all(|&p| p) {
                    store.push_env(&obs, i);
                }
            }
            if let Some(bar) = progress {
                bar.inc((store.len() - before) as u64);
            }
            // Sensor dropout that never leaves every modality on would loop forever.
            empty_steps = if store.len() == before { empty_steps + 1 } else { 0 };
            if empty_steps > 10_000 {
                return Err(PretrainError::config(
                    "env.params",
                    "10 000 steps in a row without an observation with every modality present (sensor_dropout?)",
                ));
            }
            if store.len() < samples {
                obs.clone_from(&envs.step(&BatchActions::sample(&action_space, envs.num_envs(), &mut rng))?.obs);
            }
        }
        Ok(Self { store })
    }

    /// A set made of stored samples (every one should have every modality present).
    pub fn from_store(store: ObsBuffer) -> Self {
        Self { store }
    }

    pub fn space(&self) -> &ObsSpace {
        self.store.space()
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The contiguous buffer of modality `m` (`len * numel` values).
    pub fn modality(&self, m: usize) -> &ModalityData {
        self.store.modality(m)
    }

    /// The samples at `indices` as one tensor per modality, `[b, ...shape]`, raw values as f32
    /// (see [`ObsBuffer::batch`]).
    pub fn batch<B: Backend>(&self, indices: &[usize], device: &B::Device) -> MultimodalInput<B> {
        self.store.batch(indices, device).0
    }

    /// A random split of `0..len` into `(train, validation)` indices, the validation part of
    /// `round(len * validation_fraction)` samples, in a random order.
    pub fn split(&self, validation_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let (_, val) = split_sizes(self.len(), validation_fraction);
        let train = order.split_off(val);
        (train, order)
    }
}

// ---------------------------------------------------------------------------------------------
// One step, validation, retrieval
// ---------------------------------------------------------------------------------------------

/// One optimisation step: the loss of `batch` (with mixup draws from `rng`), one backward pass,
/// one optimiser update of every encoder parameter. Returns the updated encoder and the report.
pub fn train_step<B, O>(
    encoder: M3ixupEncoder<B>,
    optim: &mut O,
    batch: &MultimodalInput<B>,
    loss: &M3ixupLossConfig,
    learning_rate: f64,
    rng: &mut impl Rng,
) -> (M3ixupEncoder<B>, M3ixupReport)
where
    B: AutodiffBackend,
    O: Optimizer<M3ixupEncoder<B>, B>,
{
    let (total, report) = m3ixup_loss(&encoder, batch, loss, rng);
    let grads = GradientsParams::from_grads(total.backward(), &encoder);
    (optim.step(learning_rate, encoder, grads), report)
}

/// Number of rows `k` whose nearest key (Euclidean) is key `k`: `queries` `[B, d]`, `keys`
/// `[B, d]`. Returns `[1]` (a float count). Ties go to the lowest index.
pub fn retrieval_hits<B: Backend>(queries: Tensor<B, 2>, keys: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, _] = queries.dims();
    let m = keys.dims()[0];
    let device = queries.device();
    // ||q - k||^2 = ||q||^2 - 2 q.k + ||k||^2; ||q||^2 is the same along a row, so the nearest key
    // maximises 2 q.k - ||k||^2.
    let key_sq = keys.clone().square().sum_dim(1).reshape([1, m]); // [1, M]
    let score = queries.matmul(keys.transpose()).mul_scalar(2.0) - key_sq; // [B, M]
    let nearest = score.argmax(1).reshape([b]); // [B]
    let own = Tensor::<B, 1, Int>::arange(0..b as i64, &device);
    nearest.equal(own).float().sum()
}

/// Retrieval accuracy of one batch: the fraction of rows whose nearest key is their own.
pub fn retrieval_accuracy<B: Backend>(queries: Tensor<B, 2>, keys: Tensor<B, 2>) -> f64 {
    let b = queries.dims()[0];
    let hits: f32 = retrieval_hits(queries, keys).into_scalar().elem();
    hits as f64 / b as f64
}

/// Validation figures of one encoder on one set of batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// The training loss on the validation batches (M3ixup: with draws from a fixed seed, so
    /// epochs are comparable), mean over batches.
    pub loss_total: f64,
    /// The GMC InfoNCE, mean over batches (comparable between `gmc` and `m3ixup` runs).
    pub loss_gmc: f64,
    /// Retrieval accuracy per modality, in the space's order.
    pub retrieval: Vec<f64>,
}

/// Validation loss and retrieval accuracy over `batches` of `samples`: latents come from the
/// non-autodiff copy of the encoder (`valid()`), so no graph is built; a loss with M3ixup terms
/// is evaluated on the autodiff encoder (its inner steps need gradients) and its graph dropped.
pub fn evaluate<B: AutodiffBackend>(
    encoder: &M3ixupEncoder<B>,
    samples: &SampleSet,
    batches: &[&[usize]],
    loss: &M3ixupLossConfig,
    draw_seed: u64,
    device: &B::Device,
) -> Validation {
    let valid = encoder.valid();
    let n = encoder.num_modalities();
    let gmc_only = LossTerm::ALL.iter().all(|&t| t == LossTerm::Gmc || !loss.enabled(t));
    let mut draws = StdRng::seed_from_u64(draw_seed);
    let (mut total, mut gmc, mut hits, mut count) = (0.0, 0.0, vec![0.0; n], 0usize);
    for indices in batches {
        let x = samples.batch::<B::InnerBackend>(indices, device);
        let feats = valid.features(&x);
        let z_joint = valid.project(feats.joint); // [b, d]
        let z_uni = project_views(&valid, feats.unimodal); // n x [b, d]
        let mut values = vec![gmc_infonce(z_joint.clone(), &z_uni, loss.tau as f32)];
        values.extend(z_uni.into_iter().map(|z_u| retrieval_hits(z_u, z_joint.clone())));
        let values: Vec<f32> = Tensor::cat(values, 0).into_data().convert::<f32>().to_vec().expect("f32 values");
        gmc += values[0] as f64;
        for (h, v) in hits.iter_mut().zip(&values[1..]) {
            *h += *v as f64;
        }
        total += if gmc_only {
            loss.gmc.weight * values[0] as f64
        } else {
            m3ixup_loss(encoder, &samples.batch::<B>(indices, device), loss, &mut draws).1.total as f64
        };
        count += indices.len();
    }
    let k = batches.len().max(1) as f64;
    Validation {
        loss_total: total / k,
        loss_gmc: gmc / k,
        retrieval: hits.into_iter().map(|h| h / count.max(1) as f64).collect(),
    }
}

/// Validation batches of `size` from `indices` (already in random order): full batches only,
/// so chance stays 1/size, unless there are fewer than `size` samples (then one batch of all).
pub fn validation_batches(indices: &[usize], size: usize) -> Vec<&[usize]> {
    if indices.len() < size {
        vec![indices]
    } else {
        indices.chunks_exact(size).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// `encoder.toml`: what a loader needs to rebuild the encoder and check that it fits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderMeta {
    /// Checkpoint layout version ([`CHECKPOINT_FORMAT`]).
    pub format: u32,
    /// How `encoder.mpk` is encoded.
    pub record: String,
    /// The environment the encoder was trained on.
    pub env_name: String,
    /// The loss it was trained with.
    pub loss_kind: LossKind,
    /// Epochs completed when the weights were saved.
    pub epoch: usize,
    /// The environment's parameters.
    pub env_params: toml::Table,
    /// The architecture (with the space, enough to rebuild the module).
    pub encoder: EncoderConfig,
    /// The observation space the encoder was built from.
    pub observation_space: ObsSpace,
    /// `encoder.mpk`'s checksum ([`crate::infra::checkpoint::checksum`]), checked when it is loaded
    /// (encoders saved before checksums have none).
    #[serde(default)]
    pub checksum: Option<String>,
}

impl EncoderMeta {
    /// Checks that an environment's observation space is the one the encoder was built from.
    pub fn check_space(&self, space: &ObsSpace) -> Result<(), String> {
        if *space == self.observation_space {
            Ok(())
        } else {
            Err(format!("the encoder was trained on {}, the environment observes {space}", self.observation_space))
        }
    }
}

/// `encoder.mpk` (full precision) and `encoder.toml` (with `encoder.mpk`'s checksum) as bytes,
/// for `dir` (named in errors).
pub fn encoder_files<B: Backend>(
    encoder: &M3ixupEncoder<B>,
    meta: &EncoderMeta,
    dir: &Path,
) -> Result<Vec<(&'static str, Vec<u8>)>, PretrainError> {
    let bytes = CheckpointRecorder::default()
        .record(encoder.clone().into_record(), ())
        .map_err(|e| PretrainError::Checkpoint { path: dir.join(CHECKPOINT_FILE), reason: e.to_string() })?;
    let meta = EncoderMeta { checksum: Some(checksum(&bytes)), ..meta.clone() };
    let text = toml::to_string(&meta)
        .map_err(|e| PretrainError::Checkpoint { path: dir.join(META_FILE), reason: e.to_string() })?;
    Ok(vec![(CHECKPOINT_FILE, bytes), (META_FILE, text.into_bytes())])
}

/// Writes `encoder.mpk` and `encoder.toml` ([`encoder_files`]) into `dir`, each atomically.
pub fn save_encoder<B: Backend>(
    dir: &Path,
    encoder: &M3ixupEncoder<B>,
    meta: &EncoderMeta,
) -> Result<(), PretrainError> {
    write_files(dir, &encoder_files(encoder, meta, dir)?)
}

/// Writes each `(name, bytes)` of `files` into `dir`, atomically.
fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), PretrainError> {
    for (file, bytes) in files {
        let path = dir.join(file);
        write_atomic(&path, bytes).map_err(PretrainError::io(format!("cannot write {}", path.display())))?;
    }
    Ok(())
}

/// Reads a checkpoint written by [`save_encoder`] from `dir` (a run directory).
pub fn load_encoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(M3ixupEncoder<B>, EncoderMeta), PretrainError> {
    let meta_path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path)
        .map_err(PretrainError::io(format!("cannot read {}", meta_path.display())))?;
    let meta: EncoderMeta = toml::from_str(&text)
        .map_err(|e| PretrainError::Checkpoint { path: meta_path.clone(), reason: e.to_string() })?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(PretrainError::Checkpoint {
            path: meta_path,
            reason: format!("format {} is not the supported {CHECKPOINT_FORMAT}", meta.format),
        });
    }
    let encoder = meta.encoder.init::<B>(&meta.observation_space, device)?;
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&path).map_err(PretrainError::io(format!("cannot read {}", path.display())))?;
    verify_checksum(&bytes, meta.checksum.as_ref())
        .map_err(|reason| PretrainError::Checkpoint { path: path.clone(), reason })?;
    let record = CheckpointRecorder::default()
        .load(bytes, device)
        .map_err(|e| PretrainError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
    let encoder = load_into(encoder, record).map_err(|reason| PretrainError::Checkpoint { path, reason })?;
    Ok((encoder, meta))
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// Run-time options that are not part of the experiment.
#[derive(Clone, Debug, Default)]
pub struct PretrainOptions {
    /// Progress bars on stderr (when it is a terminal) and one summary line per epoch.
    pub verbose: bool,
    /// Continue from the run directory's last checkpoint (one per epoch).
    pub resume: bool,
}

/// One epoch's figures (also written as a metrics row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation: Validation,
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct PretrainSummary {
    pub run_dir: PathBuf,
    pub modalities: Vec<String>,
    pub epochs: Vec<EpochMetrics>,
    /// Seconds spent collecting the data set.
    pub collect_seconds: f64,
    /// Mean seconds of one training step (forward, backward, Adam update, batch assembly).
    pub step_seconds: f64,
    pub wall_seconds: f64,
}

impl PretrainSummary {
    /// Best validation retrieval per modality over the epochs.
    pub fn best_retrieval(&self) -> Vec<f64> {
        (0..self.modalities.len())
            .map(|m| self.epochs.iter().map(|e| e.validation.retrieval[m]).fold(f64::NAN, f64::max))
            .collect()
    }

    /// The last epoch's validation retrieval per modality.
    pub fn last_retrieval(&self) -> Vec<f64> {
        self.epochs.last().map(|e| e.validation.retrieval.clone()).unwrap_or_default()
    }
}

/// What a pretraining checkpoint keeps of the loop besides the encoder and the optimiser
/// ([`LOOP_STATE_FILE`]), so that a resumed run continues exactly: the generator of the
/// minibatch order and the mixup draws, the training order as last shuffled (each epoch
/// shuffles it again, in place), and the epochs' figures for the summary. The data set is
/// collected again from `data.seed` (the same samples).
#[derive(Serialize, Deserialize)]
struct PretrainLoop {
    rng: EnvRng,
    train_idx: Vec<usize>,
    history: Vec<EpochMetrics>,
    step_seconds: f64,
}

/// The key of the pretraining metrics rows that the harness orders them by (and TensorBoard
/// plots them against): training steps so far.
pub const PRETRAIN_STEP_KEY: &str = "pretrain/step";

/// Pretrains an encoder as `config` says, writing `config.toml`, `metrics.csv`,
/// `metrics.jsonl`, `encoder.mpk` and `encoder.toml` into `run` (module documentation), with a
/// checkpoint per epoch under `checkpoints/` from which `options.resume` continues exactly.
/// Returns the trained encoder (the last epoch's, as checkpointed) and the summary.
pub fn pretrain<B: AutodiffBackend>(
    config: &PretrainConfig,
    run: &RunDir,
    device: &B::Device,
    options: &PretrainOptions,
) -> Result<(M3ixupEncoder<B>, PretrainSummary), PretrainError> {
    config.validate()?;
    let started = Instant::now();
    let text = toml::to_string_pretty(config).map_err(|e| PretrainError::config("(config)", e.to_string()))?;
    let (data, train) = (&config.data, &config.train);

    // Seeding (docs/DESIGN.md): data.seed drives the environments, the random policy and the split;
    // train.seed the network initialisation (the backend's one global RNG, seeded once, here),
    // the minibatch order and the mixup draws.
    B::seed(device, train.seed);

    // 1. Data: uniform random policy, every modality present, random 90/10 split.
    let bar = progress_bar(options.verbose, data.samples as u64, "collect", "samples");
    let collect_start = Instant::now();
    let vec =
        VecEnvConfig { num_envs: data.num_envs, workers: data.workers, seed: data.seed, ..VecEnvConfig::default() };
    let samples = SampleSet::collect_random(&config.env.name, &config.env.params, data.samples, vec, Some(&bar))?;
    let collect_seconds = collect_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let (train_idx, val_idx) = samples.split(data.validation_fraction, data.seed);
    let val_batches = validation_batches(&val_idx, train.validation_batch_size);
    let modalities: Vec<String> = samples.space().names().map(String::from).collect();
    say(
        options,
        &bar,
        format!(
            "collected {} samples of {} in {collect_seconds:.1} s: {} train, {} validation",
            samples.len(),
            samples.space(),
            train_idx.len(),
            val_idx.len()
        ),
    );

    // 2. Encoder, optimiser, loss: fresh, or from the last checkpoint with the loop's state (the
    // harness finds it, checks its config, reopens the metrics and continues the run's clock).
    let mut encoder = config.encoder.init::<B>(samples.space(), device)?;
    let mut optim = AdamConfig::new().init::<B, M3ixupEncoder<B>>();
    let loss = config.loss.effective().map_err(|e| PretrainError::config("loss.terms", e.reason))?;
    let terms: Vec<LossTerm> = LossTerm::ALL.into_iter().filter(|&t| loss.enabled(t)).collect();
    let mut meta = EncoderMeta {
        format: CHECKPOINT_FORMAT,
        record: "burn NamedMpkBytesRecorder<FullPrecisionSettings>".into(),
        env_name: config.env.name.clone(),
        loss_kind: config.loss.kind,
        epoch: 0,
        env_params: config.env.params.clone(),
        encoder: config.encoder.clone(),
        observation_space: samples.space().clone(),
        checksum: None,
    };
    let steps_per_epoch = train_idx.len() / train.batch_size;
    // `update` counts epochs, `global_step` training steps.
    let action_space = make(&config.env.name, &config.env.params)?.action_space().clone();
    let state = CheckpointState::fresh("pretrain", &config.env.name, samples.space().clone(), action_space, text);
    let progress = Progress { verbose: options.verbose, total: (train.epochs * steps_per_epoch) as u64, unit: "steps" };
    let (mut harness, checkpoint) = Harness::open(
        run,
        state,
        progress,
        train.tensorboard,
        PRETRAIN_STEP_KEY,
        &TrainOptions { resume: options.resume, ..TrainOptions::default() },
    )?;
    let mut lp =
        PretrainLoop { rng: EnvRng::seed_from_u64(train.seed), train_idx, history: Vec::new(), step_seconds: 0.0 };
    if let Some(dir) = &checkpoint {
        let saved = load_checkpoint_state(dir)?;
        (encoder, meta) = load_encoder::<B>(dir, device)?;
        optim = optim.load_record(load_record(&dir.join(OPTIMIZER_FILE), saved.checksums.get(OPTIMIZER_FILE), device)?);
        let missing = || PretrainError::Checkpoint { path: dir.join(LOOP_STATE_FILE), reason: "missing".into() };
        lp = load_saved_state(dir, &saved, LOOP_STATE_FILE)?.ok_or_else(missing)?;
        // The run's own encoder files again: a kill between the checkpoint and them may have
        // left them an epoch behind.
        save_encoder(run.path(), &encoder, &meta)?;
    }

    // 3. Epochs: shuffled minibatches, then validation, a metrics row and a checkpoint.
    let bar = harness.bar.clone();
    let (start_epoch, mut step) = (harness.state.update, harness.state.global_step as usize);
    let mut last_retrieval = String::new();
    for epoch in start_epoch + 1..=train.epochs {
        let epoch_start = Instant::now();
        bar.set_prefix(format!(" {epoch}/{}", train.epochs));
        lp.train_idx.shuffle(&mut lp.rng);
        let mut loss_sum = 0.0f64;
        let mut term_sums = vec![0.0f64; terms.len()];
        // The mixup draws and inner-step losses (`m3ixup/lambda`, `m3ixup/adapt_inner_before`,
        // ...), averaged over the epoch's steps.
        let mut draw_sums: Vec<(String, f64)> = Vec::new();
        for indices in lp.train_idx.chunks_exact(train.batch_size) {
            let step_start = Instant::now();
            let batch = samples.batch::<B>(indices, device);
            let report;
            (encoder, report) = train_step(encoder, &mut optim, &batch, &loss, train.learning_rate, &mut lp.rng);
            lp.step_seconds += step_start.elapsed().as_secs_f64();
            step += 1;
            if !report.total.is_finite() {
                return Err(PretrainError::Diverged { epoch, step, value: report.total });
            }
            loss_sum += report.total as f64;
            for (key, value) in report.metrics().into_iter().filter(|(k, _)| k.starts_with("m3ixup/")) {
                match draw_sums.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, sum)) => *sum += value,
                    None => draw_sums.push((key, value)),
                }
            }
            for (sum, &t) in term_sums.iter_mut().zip(&terms) {
                *sum += report.term(t).unwrap_or(f32::NAN) as f64;
            }
            bar.inc(1);
            bar.set_message(format!("loss {:.4}{last_retrieval}", report.total));
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();

        let validation = evaluate(&encoder, &samples, &val_batches, &loss, train.seed ^ VALIDATION_DRAWS, device);
        let seconds = epoch_start.elapsed().as_secs_f64();
        let train_loss = loss_sum / steps_per_epoch as f64;
        let mut row: Vec<(String, f64)> = vec![
            ("pretrain/epoch".into(), epoch as f64),
            (PRETRAIN_STEP_KEY.into(), step as f64),
            ("losses/train_total".into(), train_loss),
        ];
        for (sum, t) in term_sums.iter().zip(&terms) {
            row.push((format!("losses/train_{t}"), sum / steps_per_epoch as f64));
        }
        row.extend(draw_sums.into_iter().map(|(key, sum)| (key, sum / steps_per_epoch as f64)));
        row.push(("losses/val_total".into(), validation.loss_total));
        row.push(("losses/val_gmc".into(), validation.loss_gmc));
        for (name, acc) in modalities.iter().zip(&validation.retrieval) {
            row.push((format!("retrieval/{name}"), *acc));
        }
        row.push(("time/epoch_seconds".into(), seconds));
        row.push(("time/train_seconds".into(), train_seconds));
        row.push(("time/step_seconds".into(), train_seconds / steps_per_epoch as f64));
        harness.log(row)?;

        // The checkpoint (encoder, optimiser, loop state), then the run's own encoder files.
        meta.epoch = epoch;
        lp.history.push(EpochMetrics { epoch, train_loss, validation: validation.clone(), seconds });
        (harness.state.update, harness.state.global_step) = (epoch, step as u64);
        let name = format!("checkpoints/epoch-{epoch:06}");
        let dir = harness.run().file(&name);
        let encoder_bytes = encoder_files(&encoder, &meta, &dir)?; // recorded once, written twice
        let mut files = encoder_bytes.clone();
        files.push((OPTIMIZER_FILE, record_bytes(optim.to_record(), &dir.join(OPTIMIZER_FILE))?));
        files.push((LOOP_STATE_FILE, loop_state_bytes(&lp, &dir.join(LOOP_STATE_FILE))?));
        harness.checkpoint(&name, &files)?;
        write_files(run.path(), &encoder_bytes)?;

        let retrieval: String =
            modalities.iter().zip(&validation.retrieval).map(|(n, a)| format!(" {n} {a:.3}")).collect();
        last_retrieval = format!(" | val retrieval{retrieval}");
        say(options, &bar, format!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val loss {:.4} (gmc {:.4}), retrieval{retrieval}, {seconds:.1} s",
            train.epochs, validation.loss_total, validation.loss_gmc
        ));
    }
    let finished = harness.finish(train.epochs, step as u64, None);
    let summary = PretrainSummary {
        run_dir: finished.run_dir,
        modalities,
        epochs: lp.history,
        collect_seconds,
        step_seconds: lp.step_seconds / step.max(1) as f64,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    Ok((encoder, summary))
}

/// A line on stderr above the progress bar (also when the bar is hidden: not a terminal).
fn say(options: &PretrainOptions, bar: &ProgressBar, line: String) {
    if options.verbose {
        bar.suspend(|| eprintln!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn parse(text: &str) -> Result<PretrainConfig, String> {
        toml::from_str::<PretrainConfig>(text).map_err(|e| e.to_string())
    }

    fn rejected(text: &str) -> String {
        match parse(text) {
            Err(e) => e,
            Ok(c) => c.validate().expect_err("the config should be rejected").to_string(),
        }
    }

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let config = PretrainConfig::default();
        config.validate().unwrap();
        let text = toml::to_string_pretty(&config).unwrap();
        assert_eq!(parse(&text).unwrap(), config);
        assert_eq!(parse("").unwrap(), config);
        let gmc = parse("[loss]\nkind = \"gmc\"\nterms = [\"gmc\"]\n[loss.input]\nweight = 2.0\n").unwrap();
        assert_eq!(parse(&toml::to_string(&gmc).unwrap()).unwrap(), gmc);
    }

    #[test]
    fn bad_loss_configs_are_rejected_naming_the_field() {
        // An unknown term, as a table and in the `terms` list.
        let e = rejected("[loss.mixx]\nweight = 1.0\n");
        assert!(e.contains("loss.mixx"), "{e}");
        let e = rejected("[loss]\nterms = [\"gmc\", \"mixx\"]\n");
        assert!(e.contains("loss.terms") && e.contains("mixx"), "{e}");
        // A negative weight.
        let e = rejected("[loss.input]\nweight = -1.0\n");
        assert!(e.contains("loss.input.weight"), "{e}");
        let e = rejected("[loss.gmc]\nweight = -0.5\n");
        assert!(e.contains("loss.gmc.weight"), "{e}");
        // alpha <= 0, at the top and in a term.
        let e = rejected("[loss]\nalpha = 0.0\n");
        assert!(e.contains("loss.alpha"), "{e}");
        let e = rejected("[loss.adapt]\nalpha = -1.0\n");
        assert!(e.contains("loss.adapt.alpha"), "{e}");
        // An unknown kind, and an unknown key in a term.
        let e = rejected("[loss]\nkind = \"foo\"\n");
        assert!(e.contains("loss.kind") && e.contains("foo"), "{e}");
        let e = rejected("[loss.explore]\nstepz = 2\n");
        assert!(e.contains("loss.explore.stepz"), "{e}");
        let e = rejected("[loss.adapt]\nmode = \"jump\"\n");
        assert!(e.contains("loss.adapt.mode") && e.contains("jump"), "{e}");
        let e = rejected("[loss]\ntau = \"hot\"\n");
        assert!(e.contains("loss.tau"), "{e}");
        // Every term off, and gmc with other terms.
        let e = rejected("[loss]\nterms = []\n");
        assert!(e.contains("loss.terms"), "{e}");
        let e = rejected("[loss]\nkind = \"gmc\"\nterms = [\"input\"]\n");
        assert!(e.contains("loss.terms"), "{e}");
        // A stop-gradient on the joint latent would leave f_M untrained.
        let e = rejected("[loss]\njoint_gradient = 0.0\n");
        assert!(e.contains("loss.joint_gradient") && e.contains("joint processor"), "{e}");
        let e = rejected("[loss]\njoint_gradient = 1.5\n");
        assert!(e.contains("loss.joint_gradient") && e.contains("1.5"), "{e}");
    }

    #[test]
    fn bad_data_and_train_values_are_rejected_naming_the_field() {
        for (text, field) in [
            ("[train]\nbatch_size = 1\n", "train.batch_size"),
            ("[train]\nlearning_rate = -1e-3\n", "train.learning_rate"),
            ("[train]\nepochs = 0\n", "train.epochs"),
            ("[data]\nvalidation_fraction = 1.0\n", "data.validation_fraction"),
            ("[data]\nsamples = 100\n", "data.samples"),
            ("[data]\nnum_envs = 2\nworkers = 3\n", "data.workers"),
            ("[env]\nname = \"nope\"\n", "env.name"),
            ("[encoder]\nlatent_dim = 0\n", "encoder.latent_dim"),
        ] {
            let e = rejected(text);
            assert!(e.contains(field), "{text}: {e}");
        }
        let e = rejected("[train]\nepoch = 3\n");
        assert!(e.contains("epoch"), "{e}");
    }

    #[test]
    fn kind_gmc_trains_the_gmc_term_alone() {
        let c = parse("[loss]\nkind = \"gmc\"\n").unwrap();
        let loss = c.loss.effective().unwrap();
        assert!(loss.enabled(LossTerm::Gmc));
        assert!(LossTerm::ALL.iter().filter(|&&t| t != LossTerm::Gmc).all(|&t| !loss.enabled(t)));
        let c = parse("[loss]\nterms = [\"gmc\", \"adapt\"]\n").unwrap();
        let loss = c.loss.effective().unwrap();
        assert!(loss.enabled(LossTerm::Adapt) && !loss.enabled(LossTerm::Input));
    }

    fn tensor(rows: &[[f32; 3]]) -> Tensor<Flex, 2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), &Default::default())
    }

    #[test]
    fn retrieval_counts_rows_whose_nearest_key_is_their_own() {
        let keys = tensor(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        // Perfect: every query is its own key.
        assert_eq!(retrieval_accuracy(keys.clone(), keys.clone()), 1.0);
        // Near but not equal still counts: query 0 is closest to key 0.
        let q = tensor(&[[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.1, 0.0, 0.9]]);
        // By hand: row 0 -> key 0 (hit), row 1 -> key 2 (miss), row 2 -> key 2 (hit).
        assert!((retrieval_accuracy(q, keys.clone()) - 2.0 / 3.0).abs() < 1e-12);
        // A cyclic shift: nobody finds their own key.
        let shifted = tensor(&[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]);
        assert_eq!(retrieval_accuracy(shifted, keys), 0.0);
    }

    #[test]
    fn retrieval_of_unrelated_latents_is_near_chance() {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(7);
        let (b, d, batches) = (128, 10, 20);
        let unit = |rng: &mut StdRng| {
            let v: Vec<f32> = (0..b * d).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            crate::representation::encoder::l2_normalize(Tensor::<Flex, 2>::from_data(
                TensorData::new(v, [b, d]),
                &Default::default(),
            ))
        };
        let mean =
            (0..batches).map(|_| retrieval_accuracy(unit(&mut rng), unit(&mut rng))).sum::<f64>() / batches as f64;
        // Chance is 1/128 = 0.0078; 2560 independent trials put the mean well under 0.03.
        assert!(mean < 0.03, "{mean}");
        let z = unit(&mut rng);
        assert_eq!(retrieval_accuracy(z.clone(), z), 1.0);
    }

    #[test]
    fn validation_batches_are_full_unless_the_set_is_small() {
        let idx: Vec<usize> = (0..300).collect();
        let b = validation_batches(&idx, 128);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![128, 128]);
        assert_eq!(validation_batches(&idx[..50], 128).len(), 1);
        assert_eq!(split_sizes(20_000, 0.1), (18_000, 2_000));
    }
}
