//! `evaluate`: the sensor-failure table (see `m3ixup_agents::evaluate`) for one or more trained
//! agents, on the backend and device `--device` names (default `flex`, pure Rust CPU; see
//! `m3ixup::device`).
//!
//!     cargo run --release --bin evaluate -- --checkpoint runs/A [--checkpoint runs/B ...] \
//!         [--label A --label B] [--episodes 100] [--steps 300] [--p 0.1,0.3,0.5] [--noise 0.1] \
//!         [--score return|per-step] [--specialist MODALITY=DIR ...] [--full-reference DIR ...] \
//!         [--out DIR] [--device flex]
//!
//! A checkpoint is a run directory (its last checkpoint is used) or a checkpoint directory.
//! `--specialist pixels=DIR` names a run trained on pixels alone: it runs the `pixels only`
//! episodes seeing only its pixels, and every agent's `pixels only` row gains the fraction
//! `(score - random) / (specialist - random)`; `--full-reference DIR` does the same for the `all`
//! row (default with specialists: the best agent's `all` score). Several runs per modality are
//! averaged.
//! Writes `eval.md`, `eval.csv`, `eval.json` and `dropout.png` to `--out` (default: the first
//! run directory's `eval/`), and prints the table.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Parser;

use m3ixup::agents::evaluate::{EvalConfig, Score};
use m3ixup::device::DeviceArgs;
use m3ixup::jobs::{evaluate_checkpoints, write_eval_report, EvalAgent, EvalReferences};

#[derive(Parser)]
#[command(about = "Evaluate trained agents with every sensor, each sensor alone, and failing sensors")]
struct Cli {
    /// A run directory or a checkpoint directory (repeatable).
    #[arg(long = "checkpoint", required = true)]
    checkpoints: Vec<PathBuf>,
    /// A name per checkpoint, in order (default: the run directory's name).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Evaluate on this registered environment instead of the checkpoints' own.
    #[arg(long)]
    env: Option<String>,
    #[arg(long, default_value_t = EvalConfig::default().episodes)]
    episodes: usize,
    #[arg(long, default_value_t = EvalConfig::default().steps)]
    steps: usize,
    /// Episode k starts from seed + k (disjoint from training seeds by default).
    #[arg(long, default_value_t = EvalConfig::default().seed)]
    seed: u64,
    /// Per-step dropout probabilities (comma-separated; `--p` with no value for none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = EvalConfig::default().dropout_p)]
    p: Vec<f64>,
    /// Noise levels relative to the value range (comma-separated; `--noise` with no value for none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = EvalConfig::default().noise_sigma)]
    noise: Vec<f64>,
    /// Leave out the frozen-sensor conditions.
    #[arg(long)]
    no_frozen: bool,
    /// Sample actions instead of taking the policy's mean.
    #[arg(long)]
    stochastic: bool,
    /// What an episode scores: `return` (its sum of rewards), or `per-step` (return / length:
    /// the M3ixup paper's figure, for episodes of a fixed length).
    #[arg(long, default_value = "return")]
    score: Score,
    /// Episodes run side by side.
    #[arg(long, default_value_t = EvalConfig::default().num_envs)]
    num_envs: usize,
    /// Threads stepping them, the calling thread included.
    #[arg(long, default_value_t = EvalConfig::default().workers)]
    workers: usize,
    /// A specialist: a run (or checkpoint) directory trained on MODALITY alone, the reference
    /// of the `MODALITY only` rows (repeatable; several runs of one modality are averaged).
    #[arg(long = "specialist", value_name = "MODALITY=DIR", value_parser = parse_specialist)]
    specialists: Vec<(String, PathBuf)>,
    /// A run trained with every sensor, the reference of the `all` rows (repeatable: averaged).
    /// Default, with specialists: the best `all` score among the checkpoints.
    #[arg(long = "full-reference", value_name = "DIR")]
    full_references: Vec<PathBuf>,
    /// Where the result files go.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

fn parse_specialist(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((modality, dir)) if !modality.trim().is_empty() && !dir.is_empty() => {
            Ok((modality.trim().to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("`{text}`: expected MODALITY=DIR, e.g. `pixels=runs/specialist-pixels-s1`")),
    }
}

/// A run's label: its directory's name.
fn dir_label(path: &Path, fallback: String) -> String {
    path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or(fallback)
}

/// The references the command line names, specialists grouped by modality in order of first
/// mention.
fn references(cli: &Cli) -> EvalReferences {
    let mut specialists: Vec<(String, Vec<EvalAgent>)> = Vec::new();
    for (k, (modality, dir)) in cli.specialists.iter().enumerate() {
        let run = EvalAgent { label: dir_label(dir, format!("{modality} specialist {k}")), checkpoint: dir.clone() };
        match specialists.iter_mut().find(|(m, _)| m == modality) {
            Some((_, runs)) => runs.push(run),
            None => specialists.push((modality.clone(), vec![run])),
        }
    }
    let full = cli
        .full_references
        .iter()
        .enumerate()
        .map(|(k, dir)| EvalAgent { label: dir_label(dir, format!("reference {k}")), checkpoint: dir.clone() })
        .collect();
    EvalReferences { specialists, full }
}

fn main() -> anyhow::Result<()> {
    m3ixup::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if !cli.labels.is_empty() && cli.labels.len() != cli.checkpoints.len() {
        bail!("{} labels for {} checkpoints: give one per checkpoint or none", cli.labels.len(), cli.checkpoints.len());
    }
    let config = EvalConfig {
        episodes: cli.episodes,
        steps: cli.steps,
        seed: cli.seed,
        num_envs: cli.num_envs,
        workers: cli.workers,
        deterministic: !cli.stochastic,
        score: cli.score,
        dropout_p: cli.p.clone(),
        noise_sigma: cli.noise.clone(),
        frozen: !cli.no_frozen,
    };
    config.validate()?;
    cli.device.check()?;
    let agents: Vec<EvalAgent> = cli
        .checkpoints
        .iter()
        .enumerate()
        .map(|(k, path)| EvalAgent {
            label: cli.labels.get(k).cloned().unwrap_or_else(|| dir_label(path, format!("agent {k}"))),
            checkpoint: path.clone(),
        })
        .collect();
    let references = references(&cli);
    let report = evaluate_checkpoints(&agents, &references, cli.env.as_deref(), &config, &cli.device, !cli.quiet)?;

    println!("{}", report.to_markdown());
    println!("({:.1} s)", report.wall_seconds);
    let out = cli.out.clone().unwrap_or_else(|| cli.checkpoints[0].join("eval"));
    write_eval_report(&report, &out)?;
    println!("results: {}", out.display());
    Ok(())
}
