//! `report`: the README's results table, generated from committed result files.
//!
//!     cargo run --release --bin report -- --results results/ppo-pendulum [--readme README.md] \
//!         [--collect runs/m3ixup-s1 --collect runs/none-s1 ...]
//!
//! Each run directory under `--results` is named `<variant>-s<seed>` and holds `config.toml`,
//! `metrics.csv` and `eval/eval.json` (written by `train` and `evaluate`). The table
//! ([`m3ixup::report`], which documents it and its references) gives, per variant, the mean
//! over seeds of the evaluation's score and retention ratio under each condition, and the
//! training figures, and with `[targets]` in the folder's `references.toml` every seed checked
//! against them; a learning-curve chart is written to the results folder. With `--readme`,
//! the text between `<!-- results:NAME:begin -->` and `<!-- results:NAME:end -->` (NAME: the
//! results folder's name) is replaced by the table. `--collect` first copies finished runs' small
//! files there ([`m3ixup::report::RESULT_FILES`]).

use std::path::PathBuf;

use clap::Parser;

use m3ixup::report::{collect_runs, replace_readme_section, results_table};

#[derive(Parser)]
#[command(about = "Summarise committed training and evaluation results as a markdown table")]
struct Cli {
    /// A folder of run directories named <variant>-s<seed>.
    #[arg(long)]
    results: PathBuf,
    /// Replace the marked section of this file with the table.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// First copy this run directory's small result files (config, metrics, learning curve,
    /// evaluation; not checkpoints) into `--results/<its name>/` (repeatable).
    #[arg(long = "collect", value_name = "RUN")]
    collect: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = format!("cargo run --release --bin report -- --results {}", cli.results.display());
    for folder in collect_runs(&cli.results, &cli.collect)? {
        eprintln!("collected {}", folder.display());
    }
    let table = results_table(&cli.results, &command)?;
    for dir in &table.skipped {
        eprintln!("skipping {}: no eval/eval.json yet", dir.display());
    }
    println!("{}", table.markdown);
    if let Some(readme) = &cli.readme {
        replace_readme_section(readme, &cli.results, &table.markdown)?;
        println!("updated {}", readme.display());
    }
    Ok(())
}
