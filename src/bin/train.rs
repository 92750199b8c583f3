//! `train`: trains an agent from a config, on the algorithm its `algo` names: `"ppo"` (PPO with
//! the M3ixup auxiliary loss, `m3ixup_agents::ppo`), `"sac"` (SAC with the M3ixup auxiliary loss,
//! `m3ixup_agents::sac`) or `"ddpg-frozen"` (DDPG on a frozen pretrained encoder,
//! `m3ixup_agents::ddpg`), on the backend and device `--device` names (default `flex`, burn's
//! pure-Rust CPU backend; `libtorch`, `libtorch-cuda:N`, `cuda:N`, `wgpu` with the features
//! `tch`, `cuda`, `wgpu`; see `m3ixup::device`). `--threads N` sets LibTorch's CPU threads.
//!
//!     cargo run --release --bin train -- --config configs/ppo-pendulum.toml \
//!         [--set section.key=value]... [--run-name NAME] [--runs-dir runs]
//!     cargo run --release --bin train -- --resume runs/NAME
//!
//! Writes `runs/<name>/`: `config.toml`, `metrics.csv`, `metrics.jsonl`, `checkpoint.toml` and
//! `checkpoints/<update-N|step-N>/` (agent, state; PPO: optimiser), and `learning_curve.png` at
//! the end. Only PPO runs resume (off-policy runs do not checkpoint their replay buffer).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

use burn::tensor::backend::AutodiffBackend;
use m3ixup::agents::checkpoint::CHECKPOINT_POINTER;
use m3ixup::agents::ddpg::{self, DdpgConfig};
use m3ixup::agents::ppo::{train, PpoConfig, TrainOptions};
use m3ixup::agents::run::RunDir;
use m3ixup::agents::sac::{self, SacConfig};
use m3ixup::config::{load, to_toml};
use m3ixup::plot::{csv_series, moving_average, write_line_chart, LineChart, Series};

use m3ixup::device::{BackendJob, DeviceArgs};

/// A config of one of the algorithms `train` knows, chosen by its `algo` key.
enum AnyConfig {
    Ppo(PpoConfig),
    Sac(SacConfig),
    Ddpg(DdpgConfig),
}

impl AnyConfig {
    const ALGOS: &'static str = "\"ppo\", \"sac\" or \"ddpg-frozen\"";

    /// Reads the config (file and overrides) as the algorithm its `algo` key names.
    fn load(path: Option<&std::path::Path>, overrides: &[String]) -> anyhow::Result<Self> {
        let table: toml::Table = load(path, overrides)?;
        let where_ = path.map_or("the defaults".to_string(), |p| p.display().to_string());
        match table.get("algo") {
            None => Ok(Self::Ppo(load(path, overrides)?)),
            Some(toml::Value::String(a)) if a == "ppo" => Ok(Self::Ppo(load(path, overrides)?)),
            Some(toml::Value::String(a)) if a == "sac" => Ok(Self::Sac(load(path, overrides)?)),
            Some(toml::Value::String(a)) if a == "ddpg-frozen" => Ok(Self::Ddpg(load(path, overrides)?)),
            Some(other) => {
                bail!("config {where_}: `algo = {other}` is not an algorithm `train` knows (expected {})", Self::ALGOS)
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        match self {
            Self::Ppo(c) => c.validate()?,
            Self::Sac(c) => c.validate()?,
            Self::Ddpg(c) => {
                c.validate()?;
                c.check_inputs()?
            }
        }
        Ok(())
    }

    /// `<algo>-<env>`, the default run-name prefix.
    fn kind(&self) -> String {
        format!("{}-{}", self.algo(), self.env_name())
    }

    fn algo(&self) -> &str {
        match self {
            Self::Ppo(c) => &c.algo,
            Self::Sac(c) => &c.algo,
            Self::Ddpg(c) => &c.algo,
        }
    }

    fn env_name(&self) -> &str {
        match self {
            Self::Ppo(c) => &c.env.name,
            Self::Sac(c) => &c.env.name,
            Self::Ddpg(c) => &c.env.name,
        }
    }

    fn to_toml(&self) -> anyhow::Result<String> {
        match self {
            Self::Ppo(c) => to_toml(c),
            Self::Sac(c) => to_toml(c),
            Self::Ddpg(c) => to_toml(c),
        }
    }
}

/// What every algorithm's run reports at the end.
struct Summary {
    global_step: u64,
    wall_seconds: f64,
    sps: f64,
    last_reward_per_step: f64,
    recent_return: f64,
}

/// Training, generic over the backend that `--device` selects.
struct Train<'a> {
    config: &'a AnyConfig,
    run: &'a RunDir,
    options: &'a TrainOptions,
}

impl BackendJob for Train<'_> {
    type Output = Summary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Summary> {
        let context = || format!("training failed (run directory {})", self.run.path().display());
        let verbose = self.options.verbose;
        Ok(match self.config {
            AnyConfig::Ppo(c) => {
                let s = train::<B>(c, self.run, &device, self.options).with_context(context)?;
                println!("{} updates", s.updates);
                Summary {
                    global_step: s.global_step,
                    wall_seconds: s.wall_seconds,
                    sps: s.sps,
                    last_reward_per_step: s.last_reward_per_step,
                    recent_return: s.recent_return,
                }
            }
            AnyConfig::Sac(c) => {
                let s = sac::train::<B>(c, self.run, &device, verbose).with_context(context)?;
                println!("{} gradient updates", s.updates);
                Summary {
                    global_step: s.global_step,
                    wall_seconds: s.wall_seconds,
                    sps: s.sps,
                    last_reward_per_step: s.last_reward_per_step,
                    recent_return: s.recent_return,
                }
            }
            AnyConfig::Ddpg(c) => {
                let s = ddpg::train::<B>(c, self.run, &device, verbose).with_context(context)?;
                println!("{} gradient updates", s.updates);
                Summary {
                    global_step: s.global_step,
                    wall_seconds: s.wall_seconds,
                    sps: s.sps,
                    last_reward_per_step: s.last_reward_per_step,
                    recent_return: s.recent_return,
                }
            }
        })
    }
}

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

fn check_max_updates(cli: &Cli, config: &AnyConfig) -> anyhow::Result<()> {
    if cli.max_updates.is_some() && !matches!(config, AnyConfig::Ppo(_)) {
        bail!("--max-updates applies to ppo runs only (this config trains `{}`)", config.algo());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    m3ixup::alloc::keep_freed_memory();
    let cli = Cli::parse();
    // An unavailable device fails here, before the run directory is made.
    cli.device.check()?;
    // Every check that can fail comes before the run directory is made (a failed start must not
    // leave an empty directory that blocks the name).
    let (config, run): (AnyConfig, RunDir) = match &cli.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            if !path.is_file() {
                bail!("--resume {}: no config.toml there (is it a run directory?)", dir.display());
            }
            let config = AnyConfig::load(Some(&path), &[])?;
            if !matches!(config, AnyConfig::Ppo(_)) {
                bail!(
                    "--resume {}: `{}` runs cannot be resumed (their replay buffer is not checkpointed); only ppo runs can",
                    dir.display(),
                    config.algo()
                );
            }
            (config, RunDir::at(dir)?)
        }
        None => {
            let config = AnyConfig::load(cli.config.as_deref(), &cli.set)?;
            config.validate().context("invalid train config")?;
            check_max_updates(&cli, &config)?;
            let run = RunDir::create(&cli.runs_dir, cli.run_name.as_deref(), &config.kind())
                .with_context(|| format!("cannot create the run directory under {}", cli.runs_dir.display()))?;
            (config, run)
        }
    };
    config.validate().context("invalid train config")?;
    check_max_updates(&cli, &config)?;
    println!("# resolved config\n{}", config.to_toml()?);
    println!("run directory: {}", run.path().display());
    if let AnyConfig::Ppo(c) = &config {
        println!(
            "{} updates of {} transitions ({} environments x {} steps), {} env steps",
            c.num_updates(),
            c.batch_size(),
            c.rollout.num_envs,
            c.rollout.steps,
            c.num_updates() * c.batch_size()
        );
    }

    let options = TrainOptions { verbose: !cli.quiet, resume: cli.resume.is_some(), max_updates: cli.max_updates };
    println!("device: {} ({})", cli.device.device, cli.device.device.describe());
    let summary = match cli.device.run(Train { config: &config, run: &run, options: &options }) {
        Ok(summary) => summary,
        // A run that failed before it logged or saved anything frees its name again.
        Err(e) if cli.resume.is_none() => {
            let path = run.path().to_path_buf();
            if run.remove_if_unused(CHECKPOINT_POINTER).unwrap_or(false) {
                return Err(e.context(format!("(its empty run directory {} was removed)", path.display())));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };

    println!(
        "{} env steps in {:.1} s ({:.0} env steps/s); last reward/step {:.3}, recent episodic return {:.1}",
        summary.global_step, summary.wall_seconds, summary.sps, summary.last_reward_per_step, summary.recent_return
    );
    println!("checkpoint: {}", run.file("checkpoint.toml").display());

    // The learning curve of the whole run (resumed parts included), from its metrics file.
    let points = csv_series(&run.file("metrics.csv"), "global_step", "charts/reward_per_step")?;
    let curve = run.file("learning_curve.png");
    write_line_chart(
        &curve,
        &LineChart {
            title: &format!("{} on {}: training reward per step", config.algo(), config.env_name()),
            x_label: "environment steps",
            y_label: "reward per step",
            series: &[
                Series::new("per metrics row", points.clone()),
                Series::new("10-row average", moving_average(&points, 10)),
            ],
        },
    )?;
    println!("learning curve: {}", curve.display());
    Ok(())
}
