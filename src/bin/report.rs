//! `report`: the README's results table, generated from committed result files.
//!
//!     cargo run --release --bin report -- --results results/ppo-pendulum [--readme README.md]
//!
//! Each run directory under `--results` is named `<variant>-s<seed>` and holds `config.toml`,
//! `metrics.csv` and `eval/eval.json` (written by `train` and `evaluate`). The table gives, per
//! variant, the mean over seeds of the evaluation's score and retention ratio under
//! each condition, and the training figures. With `--readme`, the text between
//! `<!-- results:NAME:begin -->` and `<!-- results:NAME:end -->` (NAME: the results folder's
//! name) is replaced by the table; a learning-curve chart is written to the results folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;

use m3ixup::agents::evaluate::{Episodes, EvalReport};
use m3ixup::agents::run::write_atomic;
use m3ixup::plot::{csv_series, moving_average, write_line_chart, LineChart, Series};

#[derive(Parser)]
#[command(about = "Summarise committed training and evaluation results as a markdown table")]
struct Cli {
    /// A folder of run directories named <variant>-s<seed>.
    #[arg(long)]
    results: PathBuf,
    /// Replace the marked section of this file with the table.
    #[arg(long)]
    readme: Option<PathBuf>,
}

/// One run's figures.
struct RunFigures {
    eval: EvalReport,
    /// Mean per-step reward of the training episodes that ended in the last 10 updates with an
    /// episode end (the stochastic policy's, exploration included).
    final_reward: f64,
    /// Environment steps at which the 10-point moving average of that per-step reward first
    /// reached -1.0 (None: never).
    steps_to_minus_one: Option<f64>,
    wall_seconds: f64,
    sps: f64,
}

fn variant_and_seed(name: &str) -> Option<(String, String)> {
    let (variant, seed) = name.rsplit_once("-s")?;
    seed.chars().all(|c| c.is_ascii_digit()).then(|| (variant.to_string(), seed.to_string()))
}

fn read_run(dir: &Path) -> anyhow::Result<RunFigures> {
    let eval_path = dir.join("eval/eval.json");
    let eval: EvalReport = serde_json::from_str(
        &std::fs::read_to_string(&eval_path).with_context(|| format!("cannot read {}", eval_path.display()))?,
    )
    .with_context(|| format!("{} is not an evaluation report", eval_path.display()))?;
    let metrics = dir.join("metrics.csv");
    let reward = episode_reward_per_step(&metrics)?;
    let tail: Vec<f64> = reward.iter().rev().take(10).map(|p| p.1).collect();
    let smooth = moving_average(&reward, 10);
    let steps_to_minus_one = smooth.iter().find(|p| p.1 >= -1.0).map(|p| p.0);
    let elapsed = csv_series(&metrics, "global_step", "time/elapsed_seconds")?;
    let sps = csv_series(&metrics, "global_step", "time/sps")?;
    let wall_seconds = elapsed.last().map(|p| p.1).unwrap_or(f64::NAN);
    Ok(RunFigures {
        eval,
        final_reward: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        steps_to_minus_one,
        wall_seconds,
        sps: sps.last().map(|p| p.1).unwrap_or(f64::NAN),
    })
}

/// (step, episodic return / episodic length) for the updates in which episodes ended.
fn episode_reward_per_step(metrics: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let returns = csv_series(metrics, "global_step", "charts/episodic_return")?;
    let lengths = csv_series(metrics, "global_step", "charts/episodic_length")?;
    Ok(returns
        .iter()
        .filter_map(|&(x, r)| lengths.iter().find(|&&(lx, _)| lx == x).map(|&(_, l)| (x, r / l)))
        .collect())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut variants: BTreeMap<String, Vec<(String, RunFigures, PathBuf)>> = BTreeMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cli.results)
        .with_context(|| format!("cannot read {}", cli.results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let Some((variant, seed)) = variant_and_seed(&name) else { continue };
        if !dir.join("eval/eval.json").is_file() {
            eprintln!("skipping {}: no eval/eval.json yet", dir.display());
            continue;
        }
        let figures = read_run(&dir)?;
        variants.entry(variant).or_default().push((seed, figures, dir));
    }
    if variants.is_empty() {
        bail!("no evaluated runs (<variant>-s<seed>/eval/eval.json) under {}", cli.results.display());
    }

    // Conditions in the evaluation's order, from the first run; every run must share its protocol.
    let first = &variants.values().next().expect("non-empty")[0].1.eval;
    for (_, f, dir) in variants.values().flatten() {
        if f.eval.config != first.config {
            bail!(
                "{} was evaluated with {:?}, other runs with {:?}: re-evaluate with one protocol",
                dir.display(),
                f.eval.config,
                first.config
            );
        }
    }
    let mut conditions: Vec<String> = Vec::new();
    for r in &first.rows {
        if !conditions.contains(&r.condition) {
            conditions.push(r.condition.clone());
        }
    }
    let order = ["m3ixup", "gmc", "none", "dropout"];
    let mut names: Vec<&String> = variants.keys().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));

    let mut out = String::new();
    out.push_str(&format!(
        "Generated by `cargo run --release --bin report -- --results {}` from the run folders there.\n\n",
        cli.results.display()
    ));
    out.push_str(&format!(
        "Evaluation: {} episodes x {} steps per condition, deterministic policy, seeds from {}; cells are the mean over \
         training seeds of the {} (± its std over seeds; in brackets: the mean retention ratio). Random policy: {:.3}.\n\n",
        first.config.episodes,
        first.config.steps,
        first.config.seed,
        first.config.score.describe(),
        first.random_score().0
    ));
    for note in first.notes() {
        out.push_str(&format!("Note: {note}.\n\n"));
    }
    out.push_str("| condition |");
    for n in &names {
        out.push_str(&format!(" {n} ({} seeds) |", variants[*n].len()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(names.len()));
    out.push('\n');
    for c in &conditions {
        out.push_str(&format!("| {c} |"));
        for n in &names {
            let runs = &variants[*n];
            let (mut scores, mut retention) = (Vec::new(), Vec::new());
            for (_, f, _) in runs {
                if let Some(r) = f.eval.rows.iter().find(|r| r.condition == *c) {
                    scores.push(r.score(f.eval.config.score).0);
                    retention.push(r.retention);
                }
            }
            if scores.is_empty() {
                out.push_str(" - |");
            } else {
                let (score, spread) = Episodes::mean_std(&scores);
                let spread = if scores.len() > 1 { format!(" ± {spread:.3}") } else { String::new() };
                out.push_str(&format!(" {score:.3}{spread} ({:.2}) |", Episodes::mean_std(&retention).0));
            }
        }
        out.push('\n');
    }
    out.push_str("\nTraining (per seed): per-step reward of the training episodes (stochastic policy) ending in the last 10 updates with an episode end; env steps until its 10-point moving average first reached -1.0; wall time; env steps/s (runs shared the 2 cores with other jobs).\n\n");
    out.push_str("| variant | seed | final reward/step | steps to -1.0 | wall time | env steps/s |\n|---|---:|---:|---:|---:|---:|\n");
    let mut series = Vec::new();
    for n in &names {
        for (seed, f, dir) in &variants[*n] {
            out.push_str(&format!(
                "| {n} | {seed} | {:.3} | {} | {:.0} min | {:.0} |\n",
                f.final_reward,
                f.steps_to_minus_one.map(|s| format!("{:.0}k", s / 1000.0)).unwrap_or_else(|| "not reached".into()),
                f.wall_seconds / 60.0,
                f.sps
            ));
            let points = episode_reward_per_step(&dir.join("metrics.csv"))?;
            series.push(Series::new(format!("{n} s{seed}"), moving_average(&points, 10)));
        }
    }
    let folder = cli.results.file_name().unwrap_or_default().to_string_lossy().to_string();
    let chart = cli.results.join("learning_curves.png");
    write_line_chart(
        &chart,
        &LineChart {
            title: &format!("{folder}: training episodes' reward per step (10-point moving average)"),
            x_label: "environment steps",
            y_label: "reward per step",
            series: &series,
        },
    )?;
    out.push_str(&format!("\n![learning curves]({})\n", chart.display()));
    println!("{out}");

    if let Some(readme) = &cli.readme {
        let text = std::fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
        let begin = format!("<!-- results:{folder}:begin -->");
        let end = format!("<!-- results:{folder}:end -->");
        let (Some(a), Some(b)) = (text.find(&begin), text.find(&end)) else {
            bail!("{} has no `{begin}` ... `{end}` section", readme.display());
        };
        if b < a {
            bail!("{}: `{end}` comes before `{begin}`", readme.display());
        }
        let updated = format!("{}{begin}\n{out}{}", &text[..a], &text[b..]);
        write_atomic(readme, updated.as_bytes())?;
        println!("updated {}", readme.display());
    }
    Ok(())
}
