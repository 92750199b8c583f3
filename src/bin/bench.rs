//! `bench`: prints throughput figures measured on this machine.
//!
//!     cargo run --release --bin bench -- envs [--seconds 2] [--num-envs 16]
//!     cargo run --release --bin bench -- encoders [--steps 5] [--warmup 2] [--batch-size 128]

use std::time::Duration;

use clap::{Parser, Subcommand};

use m3ixup::agents::{EncoderConfig, M3ixupLossConfig};
use m3ixup::bench::{env_table, train_step_timing};
use m3ixup::envs::registered_names;

/// The default backend: burn's pure-Rust CPU backend with autodiff.
type Backend = burn::backend::Autodiff<burn::backend::Flex>;

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
    /// term on), on the default backend.
    Encoders {
        /// Timed steps per loss (the median is printed).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
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
        What::Encoders { steps, warmup, batch_size } => {
            let env = "multimodal-pendulum";
            let params = toml::Table::new();
            let encoder = EncoderConfig::default();
            let device = Default::default();
            let gmc = train_step_timing::<Backend>(
                env,
                &params,
                &encoder,
                &M3ixupLossConfig::gmc_only(),
                batch_size,
                warmup,
                steps,
                &device,
            )?;
            let full = train_step_timing::<Backend>(
                env,
                &params,
                &encoder,
                &M3ixupLossConfig::default(),
                batch_size,
                warmup,
                steps,
                &device,
            )?;
            println!(
                "one training step (batch assembly, loss, backward, Adam update), batch {batch_size}, {env}, \
                 GMC encoder, backend Autodiff<Flex>; median of {steps} steps after {warmup} warm-up"
            );
            println!();
            println!("| loss | s/step (median) | s/step (min) | vs GMC |");
            println!("|---|---:|---:|---:|");
            println!("| GMC | {:.3} | {:.3} | 1.00x |", gmc.median(), gmc.min());
            println!(
                "| M3ixup, every term on | {:.3} | {:.3} | {:.2}x |",
                full.median(),
                full.min(),
                full.median() / gmc.median()
            );
        }
    }
    Ok(())
}
