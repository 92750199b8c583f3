//! `pretrain`: trains the encoders offline on random-policy data (the paper's protocol, see
//! `m3ixup_agents::representation::pretrain`), on the backend and device `--device` names (default `flex`,
//! burn's pure-Rust CPU backend; see `m3ixup::device`).
//!
//!     cargo run --release --bin pretrain -- --config configs/pretrain-m3ixup.toml \
//!         [--set section.key=value]... [--run-name NAME] [--runs-dir runs] \
//!         [--device flex|libtorch|libtorch-cuda:N|cuda:N|wgpu...] [--threads N]
//!     cargo run --release --bin pretrain -- --resume runs/NAME
//!
//! Writes `runs/<name>/` (`config.toml`, `metrics.csv`, `metrics.jsonl`, `encoder.mpk`,
//! `encoder.toml`, `checkpoints/`); the name defaults to `pretrain-<loss kind>-<UTC timestamp>`.
//! `--resume` continues a run from its last epoch's checkpoint, with the run's own config.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

use m3ixup::agents::infra::checkpoint::CHECKPOINT_POINTER;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::agents::representation::pretrain::{PretrainConfig, PretrainOptions, CHECKPOINT_FILE};
use m3ixup::config::{load, to_toml};
use m3ixup::device::DeviceArgs;
use m3ixup::jobs::pretrain_encoders;

#[derive(Parser)]
#[command(about = "Pretrain the multimodal encoders (GMC or M3ixup loss) on random-policy data")]
struct Cli {
    /// Config file (TOML). Without it, the built-in defaults (those of configs/pretrain-m3ixup.toml).
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its own config.toml.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["set", "run_name"])]
    resume: Option<PathBuf>,
    /// Override one key, e.g. `--set train.epochs=5` or `--set loss.kind=gmc` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Name of the run directory (default: pretrain-<loss kind>-<UTC timestamp>).
    #[arg(long)]
    run_name: Option<String>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// No progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> anyhow::Result<()> {
    m3ixup::alloc::keep_freed_memory();
    let cli = Cli::parse();
    // An unavailable device fails here, before the run directory is made.
    cli.device.check()?;
    let (config, run) = match &cli.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            if !path.is_file() {
                bail!("--resume {}: no config.toml there (is it a run directory?)", dir.display());
            }
            let config: PretrainConfig = load(Some(&path), &[])?;
            config.validate().context("invalid pretrain config")?;
            (config, RunDir::at(dir)?)
        }
        None => {
            let config: PretrainConfig = load(cli.config.as_deref(), &cli.set)?;
            config.validate().context("invalid pretrain config")?;
            let kind = format!("pretrain-{}", config.loss.kind);
            let run = RunDir::create(&cli.runs_dir, cli.run_name.as_deref(), &kind)
                .with_context(|| format!("cannot create the run directory under {}", cli.runs_dir.display()))?;
            // At once, so that a run killed at any moment after this can be resumed from its
            // directory alone (before its first checkpoint, it starts over).
            run.write_config(&to_toml(&config)?)
                .with_context(|| format!("cannot write {}", run.file("config.toml").display()))?;
            (config, run)
        }
    };
    println!("# resolved config\n{}", to_toml(&config)?);
    println!("run directory: {}", run.path().display());

    println!("device: {} ({})", cli.device.device, cli.device.device.describe());

    let options = PretrainOptions { verbose: !cli.quiet, resume: cli.resume.is_some() };
    let summary = match pretrain_encoders(&config, &run, &cli.device, options) {
        Ok(summary) => summary,
        Err(e) if cli.resume.is_some() => return Err(e),
        Err(e) => {
            // A run that failed before it logged or saved anything frees its name again.
            let path = run.path().to_path_buf();
            if run.remove_if_unused(CHECKPOINT_POINTER).unwrap_or(false) {
                return Err(e.context(format!("(its empty run directory {} was removed)", path.display())));
            }
            return Err(e);
        }
    };

    println!();
    println!(
        "{} epochs in {:.1} s ({:.1} s collecting data, {:.3} s per training step)",
        summary.epochs.len(),
        summary.wall_seconds,
        summary.collect_seconds,
        summary.step_seconds
    );
    println!("validation retrieval accuracy (chance = 1/{}):", config.train.validation_batch_size);
    println!("| modality | best | at epoch | last |");
    println!("|---|---:|---:|---:|");
    let (best, last) = (summary.best_retrieval(), summary.last_retrieval());
    for (m, name) in summary.modalities.iter().enumerate() {
        let best_epoch =
            summary.epochs.iter().find(|e| e.validation.retrieval[m] == best[m]).map(|e| e.epoch).unwrap_or(0);
        println!("| {name} | {:.3} | {best_epoch} | {:.3} |", best[m], last[m]);
    }
    if let Some(e) = summary.epochs.last() {
        println!("last validation loss {:.4} (gmc {:.4})", e.validation.loss_total, e.validation.loss_gmc);
    }
    println!("checkpoint: {}", run.file(CHECKPOINT_FILE).display());
    Ok(())
}
