//! `train`: trains an agent from a config (PPO with the M3ixup auxiliary loss, see
//! `m3ixup_agents::ppo`), on the backend and device `--device` names (default `flex`, burn's
//! pure-Rust CPU backend; `libtorch`, `libtorch-cuda:N`, `cuda:N` with the features `tch`,
//! `cuda`; see `m3ixup::device`). `--threads N` sets LibTorch's CPU threads.
//!
//!     cargo run --release --bin train -- --config configs/ppo-pendulum.toml \
//!         [--set section.key=value]... [--run-name NAME] [--runs-dir runs]
//!     cargo run --release --bin train -- --resume runs/NAME
//!
//! Writes `runs/<name>/`: `config.toml`, `metrics.csv`, `metrics.jsonl`, `checkpoint.toml` and
//! `checkpoints/update-N/` (agent, optimiser, state), and `learning_curve.png` at the end.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

use burn::tensor::backend::AutodiffBackend;
use m3ixup::agents::ppo::{train, PpoConfig, TrainOptions, TrainSummary};
use m3ixup::agents::run::RunDir;
use m3ixup::config::{load, to_toml};
use m3ixup::plot::{csv_series, moving_average, write_line_chart, LineChart, Series};

use m3ixup::device::{self, BackendJob, DeviceSpec, Threads};

/// Training, generic over the backend that `--device` selects.
struct Train<'a> {
    config: &'a PpoConfig,
    run: &'a RunDir,
    options: &'a TrainOptions,
}

impl BackendJob for Train<'_> {
    type Output = TrainSummary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<TrainSummary> {
        train::<B>(self.config, self.run, &device, self.options)
            .with_context(|| format!("training failed (run directory {})", self.run.path().display()))
    }
}

#[derive(Parser)]
#[command(about = "Train an agent (PPO + M3ixup auxiliary loss) from a TOML config")]
struct Cli {
    /// Config file (TOML). Without it, the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one key, e.g. `--set train.total_steps=200000` or `--set aux.kind=none` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Name of the run directory (default: <algo>-<env>-<UTC timestamp>).
    #[arg(long)]
    run_name: Option<String>,
    /// Where run directories go.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Continue the run in this directory from its last checkpoint, with its own config.toml.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "set", "run_name"])]
    resume: Option<PathBuf>,
    /// Stop after this many updates in this process (the run can be resumed later).
    #[arg(long)]
    max_updates: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Backend and device: flex | libtorch | libtorch-cuda:N | cuda:N (an unavailable one fails
    /// at start, naming what this binary has).
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// CPU threads of LibTorch's intra-op pool (and OpenMP's); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // An unavailable device fails here, before the run directory is made.
    device::check(&cli.device)?;
    let (config, run): (PpoConfig, RunDir) = match &cli.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            if !path.is_file() {
                bail!("--resume {}: no config.toml there (is it a run directory?)", dir.display());
            }
            (load(Some(&path), &[])?, RunDir::at(dir)?)
        }
        None => {
            let config: PpoConfig = load(cli.config.as_deref(), &cli.set)?;
            config.validate().context("invalid train config")?;
            let kind = format!("{}-{}", config.algo, config.env.name);
            let run = RunDir::create(&cli.runs_dir, cli.run_name.as_deref(), &kind)
                .with_context(|| format!("cannot create the run directory under {}", cli.runs_dir.display()))?;
            (config, run)
        }
    };
    config.validate().context("invalid train config")?;
    println!("# resolved config\n{}", to_toml(&config)?);
    println!("run directory: {}", run.path().display());
    println!(
        "{} updates of {} transitions ({} environments x {} steps), {} env steps",
        config.num_updates(),
        config.batch_size(),
        config.rollout.num_envs,
        config.rollout.steps,
        config.num_updates() * config.batch_size()
    );

    let options = TrainOptions { verbose: !cli.quiet, resume: cli.resume.is_some(), max_updates: cli.max_updates };
    println!("device: {} ({})", cli.device, cli.device.backend_name());
    let summary =
        device::run_on_with(&cli.device, Threads::new(cli.threads), Train { config: &config, run: &run, options: &options })?;

    println!(
        "{} updates, {} env steps in {:.1} s ({:.0} env steps/s); last rollout reward/step {:.3}, recent episodic return {:.1}",
        summary.updates,
        summary.global_step,
        summary.wall_seconds,
        summary.sps,
        summary.last_reward_per_step,
        summary.recent_return
    );
    println!("checkpoint: {}", run.file("checkpoint.toml").display());

    // The learning curve of the whole run (resumed parts included), from its metrics file.
    let points = csv_series(&run.file("metrics.csv"), "global_step", "charts/reward_per_step")?;
    let curve = run.file("learning_curve.png");
    write_line_chart(
        &curve,
        &LineChart {
            title: &format!("{} on {}: rollout reward per step", config.algo, config.env.name),
            x_label: "environment steps",
            y_label: "reward per step",
            series: &[Series::new("per update", points.clone()), Series::new("10-update average", moving_average(&points, 10))],
        },
    )?;
    println!("learning curve: {}", curve.display());
    Ok(())
}
