//! `bench`: prints throughput figures measured on this machine.
//!
//!     cargo run --release --bin bench -- envs [--seconds 2] [--num-envs 16]

use std::time::Duration;

use clap::{Parser, Subcommand};

use m3ixup::bench::env_table;
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
    /// of environments over 1 and over 2 worker threads.
    Envs {
        /// Measuring time per figure, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Environments in the vector.
        #[arg(long, default_value_t = 16)]
        num_envs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().what {
        What::Envs { seconds, num_envs } => {
            let rows = env_table(&registered_names(), num_envs, Duration::from_secs_f64(seconds))?;
            println!("env-steps/s, release build, {} s per figure, uniform random actions", seconds);
            println!();
            println!("| environment | 1 env, 1 thread | {num_envs} envs, 1 worker | {num_envs} envs, 2 workers | 2 workers / 1 env |");
            println!("|---|---:|---:|---:|---:|");
            for r in rows {
                println!(
                    "| {} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                    r.name,
                    r.single,
                    r.vector_1_worker,
                    r.vector_2_workers,
                    r.vector_2_workers / r.single
                );
            }
        }
    }
    Ok(())
}
