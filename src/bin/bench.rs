//! `bench`: prints throughput figures measured on this machine.
//!
//!     cargo run --release --bin bench -- envs [--seconds 2] [--num-envs 16]
//!     cargo run --release --bin bench -- encoders [--steps 5] [--warmup 2] [--batch-size 128] \
//!         [--device flex|libtorch|libtorch-cuda:N|cuda:N|wgpu...] [--threads N] [--gmc-only] [--json]
//!     cargo run --release --bin bench -- ppo [--config configs/ppo-pendulum-m3ixup.toml] [--updates 4] \
//!         [--rounds 2] [--variant aux.kind=none]... [--device D] [--threads N]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use m3ixup::agents::algorithms::ppo::PpoConfig;
use m3ixup::bench::{encoder_timings, env_table, ppo_timings};
use m3ixup::config::load;
use m3ixup::device::{DeviceArgs, DeviceSpec, Threads};
use m3ixup::envs::registered_names;

#[derive(Parser)]
#[command(about = "Throughput figures measured on this machine")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Env-steps/s of every built-in environment: one environment on one thread, and a vector
    /// of environments on 1 thread (inline) and on 2 threads (the caller and one worker).
    Envs {
        /// Measuring time per figure, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Environments in the vector.
        #[arg(long, default_value_t = 16)]
        num_envs: usize,
    },
    /// Seconds of one pretraining step (forward + backward + Adam update) on multimodal-pendulum
    /// observations with GMC's encoder: the GMC loss alone, and the full M3ixup loss (every
    /// term on), on the backend and device `--device` names.
    Encoders {
        /// Timed steps per loss (the median is printed).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        #[command(flatten)]
        device: DeviceArgs,
        /// Time the GMC loss only.
        #[arg(long)]
        gmc_only: bool,
        /// Print one JSON object (every step's seconds) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Env-steps/s of PPO training (rollout + learning per update) for a config and variants of
    /// it, as ratios to the config itself, measured in this process with the runs interleaved.
    Ppo {
        #[arg(long, default_value = "configs/ppo-pendulum-m3ixup.toml")]
        config: PathBuf,
        /// Variants: overrides of the config, `;`-separated within one variant (repeatable),
        /// e.g. `--variant aux.kind=none`.
        #[arg(long = "variant")]
        variants: Vec<String>,
        /// Updates per run (the first is warm-up and left out).
        #[arg(long, default_value_t = 4)]
        updates: usize,
        /// Runs per config, interleaved.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Print one JSON object per config (name, env-steps/s, every update's seconds) instead
        /// of the table (bench/ppo-vs-sb3.sh reads it).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

fn main() -> anyhow::Result<()> {
    m3ixup::alloc::keep_freed_memory();
    match Cli::parse().what {
        What::Ppo { config, variants, updates, rounds, json, device } => {
            anyhow::ensure!(updates >= 2, "--updates must be at least 2 (the first is warm-up)");
            let mut names = vec!["the config".to_string()];
            let mut configs: Vec<PpoConfig> = vec![load(Some(config.as_path()), &[])?];
            for v in &variants {
                let sets: Vec<String> = v.split(';').map(|s| s.trim().to_string()).collect();
                configs.push(load(Some(config.as_path()), &sets)?);
                names.push(v.clone());
            }
            for c in &configs {
                c.validate()?;
            }
            let timings = ppo_timings(&device, &configs, updates, rounds)?;
            if json {
                for (name, t) in names.iter().zip(&timings) {
                    let row = serde_json::json!({
                        "config": name,
                        "device": device.device.to_string(),
                        "env_steps_per_sec": t.env_steps_per_sec(),
                        "transitions_per_update": t.transitions,
                        "rollout_seconds": t.rollout_seconds,
                        "learn_seconds": t.learn_seconds,
                    });
                    println!("{row}");
                }
                return Ok(());
            }
            println!(
                "PPO training throughput, {} on {} ({}): {rounds} interleaved run(s) of {updates} updates per config, \
                 the first update of each left out",
                config.display(),
                device.device,
                device.device.describe()
            );
            println!();
            println!("| config | env-steps/s | vs the config | s/update rollout | s/update learning |");
            println!("|---|---:|---:|---:|---:|");
            let reference = timings[0].env_steps_per_sec();
            for (name, t) in names.iter().zip(&timings) {
                println!(
                    "| {name} | {:.0} | {:.2}x | {:.2} | {:.2} |",
                    t.env_steps_per_sec(),
                    t.env_steps_per_sec() / reference,
                    t.mean_rollout_seconds(),
                    t.mean_learn_seconds()
                );
            }
        }
        What::Envs { seconds, num_envs } => {
            let rows = env_table(&registered_names(), num_envs, Duration::from_secs_f64(seconds))?;
            println!("env-steps/s, release build, {} s per figure, uniform random actions", seconds);
            println!();
            println!(
                "| environment | 1 env, 1 thread | {num_envs} envs, 1 thread | {num_envs} envs, 2 threads | 2 threads / 1 env | 2 threads / 1 thread |"
            );
            println!("|---|---:|---:|---:|---:|---:|");
            for r in rows {
                println!(
                    "| {} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
                    r.name,
                    r.single,
                    r.vector_1_thread,
                    r.vector_2_threads,
                    r.vector_2_threads / r.single,
                    r.vector_2_threads / r.vector_1_thread
                );
            }
        }
        What::Encoders { steps, warmup, batch_size, device: args, gmc_only, json } => {
            let env = "multimodal-pendulum";
            let (gmc, full) = encoder_timings(&args, batch_size, warmup, steps, gmc_only)?;
            let device = args.device;
            let intra = if device == DeviceSpec::Flex { 1 } else { Threads::new(args.threads).resolved().0 };
            if json {
                let mut out = serde_json::json!({
                    "device": device.to_string(),
                    "backend": device.backend_name(),
                    "threads": intra,
                    "batch_size": batch_size,
                    "warmup": warmup,
                    "gmc_seconds": gmc.seconds,
                    "gmc_median": gmc.median(),
                });
                if let Some(full) = &full {
                    out["m3ixup_seconds"] = serde_json::json!(full.seconds);
                    out["m3ixup_median"] = serde_json::json!(full.median());
                }
                println!("{out}");
                return Ok(());
            }
            println!(
                "one training step (batch assembly, loss, backward, Adam update), batch {batch_size}, {env}, \
                 GMC encoder, device {device} (backend {}, {intra} CPU thread(s)); median of {steps} steps after {warmup} warm-up",
                device.describe()
            );
            println!();
            println!("| loss | s/step (median) | s/step (min) | vs GMC |");
            println!("|---|---:|---:|---:|");
            println!("| GMC | {:.3} | {:.3} | 1.00x |", gmc.median(), gmc.min());
            if let Some(full) = full {
                println!(
                    "| M3ixup, every term on | {:.3} | {:.3} | {:.2}x |",
                    full.median(),
                    full.min(),
                    full.median() / gmc.median()
                );
            }
        }
    }
    Ok(())
}
