//! `train`: trains an agent from a config, on the algorithm its `algo` names: `"ppo"` (PPO with
//! the M3ixup auxiliary loss, `m3ixup_agents::algorithms::ppo`), `"sac"` (SAC with the M3ixup auxiliary loss,
//! `m3ixup_agents::algorithms::sac`) or `"ddpg-frozen"` (DDPG on a frozen pretrained encoder,
//! `m3ixup_agents::algorithms::ddpg`), on the backend and device `--device` names (default `flex`, burn's
//! pure-Rust CPU backend; `libtorch`, `libtorch-cuda:N`, `cuda:N`, `wgpu` with the features
//! `tch`, `cuda`, `wgpu`; see `m3ixup::device`). `--threads N` sets LibTorch's CPU threads.
//!
//!     cargo run --release --bin train -- --config configs/ppo-pendulum.toml \
//!         [--set section.key=value]... [--run-name NAME] [--runs-dir runs]
//!     cargo run --release --bin train -- --resume runs/NAME
//!
//! Writes `runs/<name>/`: `config.toml`, `metrics.csv`, `metrics.jsonl`, TensorBoard event files
//! of the same rows (unless `train.tensorboard = false`), `checkpoint.toml` and
//! `checkpoints/<update-N|step-N>/` (agent, state; PPO: optimiser), and `learning_curve.png` at
//! the end. Only PPO runs resume (off-policy runs do not checkpoint their replay buffer). The
//! algorithms are those of `m3ixup_agents::algorithms`'s registry; the work is
//! `m3ixup::jobs::TrainConfig::train`.

use std::path::PathBuf;

use clap::Parser;

use m3ixup::agents::infra::harness::TrainOptions;
use m3ixup::device::DeviceArgs;
use m3ixup::jobs::{TrainConfig, TrainRun};

#[derive(Parser)]
#[command(
    about = "Train an agent (PPO or SAC with the M3ixup auxiliary loss, or DDPG on a frozen pretrained encoder) from a TOML config"
)]
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
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> anyhow::Result<()> {
    m3ixup::alloc::keep_freed_memory();
    let cli = Cli::parse();
    // An unavailable device fails here, before the run directory is made.
    cli.device.check()?;
    let options = TrainOptions { verbose: !cli.quiet, max_updates: cli.max_updates, ..TrainOptions::default() };
    // Every check that can fail comes before the run directory is made (a failed start must not
    // leave an empty directory that blocks the name).
    let job = match &cli.resume {
        Some(dir) => TrainRun::resume(dir).map_err(|e| e.context("--resume"))?,
        None => {
            let config = TrainConfig::load(cli.config.as_deref(), &cli.set)?;
            TrainRun::create(config, &cli.runs_dir, cli.run_name.as_deref())?
        }
    };
    let (config, run) = (&job.config, &job.run);
    println!("# resolved config\n{}", config.to_toml()?);
    println!("run directory: {}", run.path().display());
    if let Some(plan) = config.plan() {
        println!("{plan}");
    }

    println!("device: {} ({})", cli.device.device, cli.device.device.describe());
    let summary = job.train(&cli.device, &options)?;

    println!("{} updates", summary.updates);
    println!(
        "{} env steps in {:.1} s ({:.0} env steps/s); last reward/step {:.3}, recent episodic return {:.1}",
        summary.global_step, summary.wall_seconds, summary.sps, summary.last_reward_per_step, summary.recent_return
    );
    println!("checkpoint: {}", run.file("checkpoint.toml").display());

    let curve = job.write_learning_curve()?;
    println!("learning curve: {}", curve.display());
    Ok(())
}
