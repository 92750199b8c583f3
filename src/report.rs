//! The results table of a folder of evaluated runs: what the `report` binary prints and puts in
//! the README, and what a sweep (`python -m m3ixup.sweep`) writes next to its runs.
//!
//! Each run directory under the folder is named `<variant>-s<seed>` and holds `config.toml`,
//! `metrics.csv` and `eval/eval.json` (written by `train` and `evaluate`). The table gives, per
//! variant, the mean over seeds of the evaluation's score and retention ratio under each
//! condition, and the training figures; a learning-curve chart is written to the folder.
//!
//! **References.** A variant named `specialist-<modality>` (run folders
//! `specialist-<modality>-s<seed>`) is a specialist: runs trained on that modality alone and
//! evaluated alone with the same protocol. It gets no column; its mean score with its sensor
//! (its `all` row) is the reference of the `<modality> only` rows, and the `all` rows are
//! compared with the best variant's mean `all` score. Each cell of such a row gains, beside the
//! retention, `[mean, worst x]`: `(score - random) / (reference - random)` over the variant's
//! seeds, mean and lowest. An optional `references.toml` in the folder names them instead:
//! `all = "<variant>"` (the full-sensor reference) and `<modality> = "<variant>"` (a
//! specialist). A name with a `/` is another results folder's variant, relative to this folder
//! (`sound = "../ppo-pendulum-specialists/sound-ep12"`): its runs are read from there, so a
//! study can share references without copying them; they are references only (no column, no
//! training row), evaluated with the same protocol. A folder without either renders as it did
//! before references existed.
//!
//! **Targets.** A `[targets]` table in `references.toml` sets thresholds per condition:
//! `"sound only" = { fraction = 0.95 }` (its fraction against the reference) or
//! `"sound p=0.5" = { retention = 0.9 }` (its retention of the seed's own `all` score). The
//! table then gains a section that checks every seed of every variant against them: per target
//! the mean, the std over seeds (n - 1), the worst seed and the seeds below, and per variant the
//! seeds that meet every target. Study targets are claims about the worst seed; this section is
//! where a folder's runs are held to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::agents::evaluate::{reference_fraction, Condition, Episodes, EvalReport, EvalRow, Score};
use crate::agents::infra::run::write_atomic;
use crate::plot::{csv_series, moving_average, write_line_chart, LineChart, Series};

/// A rendered results table.
pub struct ResultsTable {
    /// The markdown: the protocol, the sensor-failure table, the training table and the chart's link.
    pub markdown: String,
    /// The learning-curve chart written into the results folder.
    pub chart: PathBuf,
    /// Run directories left out because they have no `eval/eval.json` yet.
    pub skipped: Vec<PathBuf>,
}

/// One run's figures.
struct RunFigures {
    eval: EvalReport,
    /// The training episodes' score, measured as the evaluation's (`--score`: per-step reward
    /// or return), averaged over the last 10 updates with an episode end (the stochastic
    /// policy's, exploration included).
    final_training_score: f64,
    /// Per-step scores only (the pendulum's tables): environment steps at which the 10-point
    /// moving average of the per-step reward first reached -1.0 (None: never).
    steps_to_minus_one: Option<f64>,
    /// The 10-point moving average of the training episodes' score ([`training_curve`]), for
    /// the learning-curve chart.
    smoothed_curve: Vec<(f64, f64)>,
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
    let curve = training_curve(&metrics, eval.config.score)?;
    let tail: Vec<f64> = curve.iter().rev().take(10).map(|p| p.1).collect();
    let smoothed_curve = moving_average(&curve, 10);
    let steps_to_minus_one = match eval.config.score {
        Score::PerStep => smoothed_curve.iter().find(|p| p.1 >= -1.0).map(|p| p.0),
        Score::Return => None,
    };
    let elapsed = csv_series(&metrics, "global_step", "time/elapsed_seconds")?;
    let sps = csv_series(&metrics, "global_step", "time/sps")?;
    let wall_seconds = elapsed.last().map(|p| p.1).unwrap_or(f64::NAN);
    Ok(RunFigures {
        eval,
        final_training_score: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        steps_to_minus_one,
        smoothed_curve,
        wall_seconds,
        sps: sps.last().map(|p| p.1).unwrap_or(f64::NAN),
    })
}

/// A variant's runs: (seed, figures, run directory).
type Runs = Vec<(String, RunFigures, PathBuf)>;

/// What the rows of a condition are compared with.
struct FolderReference {
    /// `all` or `<modality> only`.
    condition: String,
    variant: String,
    /// How it was chosen, for the table's text.
    how: String,
    seeds: usize,
    /// The mean over the variant's seeds of its `all` score.
    score: f64,
    /// The std over its seeds (n - 1) of that score.
    std: f64,
    /// Its own worst seed as a fraction of `score`: how far a seed of the reference itself
    /// falls short of a fraction target.
    worst_fraction: f64,
}

impl FolderReference {
    fn new(condition: String, variant: &str, how: String, runs: &Runs) -> anyhow::Result<Self> {
        let scores = all_scores(variant, runs)?;
        let (score, std, (_, worst)) = seed_summary(&scores);
        let random = runs[0].1.eval.random_score().0;
        Ok(Self {
            condition,
            variant: variant.to_string(),
            how,
            seeds: runs.len(),
            score,
            std,
            worst_fraction: reference_fraction(worst, score, random),
        })
    }

    /// For the table's text: "`sound only`: `specialist-sound`, trained on sound alone (3
    /// seeds), -1.384 ± 0.126, its worst seed 0.97 of that".
    fn describe(&self) -> String {
        let (condition, variant, how, score) = (&self.condition, &self.variant, &self.how, self.score);
        if self.seeds == 1 {
            return format!("`{condition}`: `{variant}`, {how} (1 seed), {score:.3}");
        }
        format!(
            "`{condition}`: `{variant}`, {how} ({} seeds), {score:.3} ± {:.3}, its worst seed {:.2} of that",
            self.seeds, self.std, self.worst_fraction
        )
    }
}

/// The optional `references.toml` of a results folder: `all` or a modality name -> a variant.
const REFERENCES_FILE: &str = "references.toml";

/// The prefix of specialist variants: `specialist-<modality>`.
const SPECIALIST_PREFIX: &str = "specialist-";

/// The `[targets]` key of `references.toml`: condition label -> its thresholds.
const TARGETS_KEY: &str = "targets";

/// What a condition's rows must reach on every seed (`[targets]` of `references.toml`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionTarget {
    /// The lowest fraction against the condition's reference.
    fraction: Option<f64>,
    /// The lowest retention of the seed's own `all` score.
    retention: Option<f64>,
}

/// What a target measures.
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    Fraction,
    Retention,
}

/// One threshold of the folder's targets, on one condition.
struct Target {
    condition: String,
    measure: Measure,
    threshold: f64,
}

/// `references.toml`, parsed: the variants it names (`all` or a modality -> a variant) and its
/// targets (condition label -> thresholds), both empty without the file.
struct ReferencesFile {
    names: BTreeMap<String, String>,
    targets: BTreeMap<String, ConditionTarget>,
}

fn read_references_file(results: &Path) -> anyhow::Result<ReferencesFile> {
    let path = results.join(REFERENCES_FILE);
    if !path.is_file() {
        return Ok(ReferencesFile { names: BTreeMap::new(), targets: BTreeMap::new() });
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let targets = match table.remove(TARGETS_KEY) {
        None => BTreeMap::new(),
        Some(value) => {
            let targets: BTreeMap<String, ConditionTarget> = value.try_into().with_context(|| {
                format!(
                    "{}: [{TARGETS_KEY}] maps a condition to its thresholds, e.g. \
                     `\"sound only\" = {{ fraction = 0.95 }}` or `\"sound p=0.5\" = {{ retention = 0.9 }}`",
                    path.display()
                )
            })?;
            for (condition, target) in &targets {
                if target.fraction.is_none() && target.retention.is_none() {
                    bail!(
                        "{}: [{TARGETS_KEY}] \"{condition}\" sets neither `fraction` nor `retention`",
                        path.display()
                    );
                }
                for (name, value) in [("fraction", target.fraction), ("retention", target.retention)] {
                    if value.is_some_and(|v| !v.is_finite()) {
                        bail!("{}: [{TARGETS_KEY}] \"{condition}\" {name} must be a finite number", path.display());
                    }
                }
            }
            targets
        }
    };
    let names = table
        .into_iter()
        .map(|(key, value)| match value {
            toml::Value::String(variant) => Ok((key, variant)),
            other => bail!(
                "{}: `{key} = {other}` must name a variant, e.g. `{key} = \"{SPECIALIST_PREFIX}{key}\"`",
                path.display()
            ),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ReferencesFile { names, targets })
}

/// The folder's targets in the order of `conditions`, checked against them and the references.
fn folder_targets(
    results: &Path,
    targets: &BTreeMap<String, ConditionTarget>,
    conditions: &[String],
    references: &[FolderReference],
) -> anyhow::Result<Vec<Target>> {
    let path = results.join(REFERENCES_FILE);
    for (condition, target) in targets {
        if !conditions.contains(condition) {
            bail!(
                "{}: [{TARGETS_KEY}] \"{condition}\": the evaluations here have no such condition (conditions: {})",
                path.display(),
                conditions.join(", ")
            );
        }
        if target.fraction.is_some() && !references.iter().any(|r| r.condition == *condition) {
            let with: Vec<&str> = references.iter().map(|r| r.condition.as_str()).collect();
            bail!(
                "{}: [{TARGETS_KEY}] \"{condition}\" sets a fraction, but `{condition}` has no reference \
                 (conditions with one: {})",
                path.display(),
                if with.is_empty() { "none".to_string() } else { with.join(", ") }
            );
        }
    }
    let mut found = Vec::new();
    for condition in conditions {
        let Some(target) = targets.get(condition) else { continue };
        for (measure, threshold) in [(Measure::Fraction, target.fraction), (Measure::Retention, target.retention)] {
            if let Some(threshold) = threshold {
                found.push(Target { condition: condition.clone(), measure, threshold });
            }
        }
    }
    Ok(found)
}

/// Mean, std over seeds (n - 1; 0 for one seed) and the lowest value with its index.
fn seed_summary(values: &[f64]) -> (f64, f64, (usize, f64)) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let worst =
        values.iter().copied().enumerate().fold((0, f64::INFINITY), |w, (i, v)| if v < w.1 { (i, v) } else { w });
    (mean, std, worst)
}

/// The targets section (see the module's documentation): one row per variant.
fn targets_section(
    targets: &[Target],
    names: &[&String],
    variants: &BTreeMap<String, Runs>,
    references: &[FolderReference],
) -> String {
    let mut out = format!(
        "Against the targets of {REFERENCES_FILE}, per seed (fraction: against the reference above; retention: of \
         the seed's own `all` score): the mean over seeds ± the std over seeds (n - 1), the worst seed, and the \
         seeds below the target.\n\n| variant |"
    );
    for t in targets {
        let what = if t.measure == Measure::Fraction { "fraction" } else { "retention" };
        out.push_str(&format!(" {}: {what} ≥ {} |", t.condition, t.threshold));
    }
    out.push_str(" seeds meeting every target |\n|---|");
    out.push_str(&"---:|".repeat(targets.len() + 1));
    out.push('\n');
    for n in names {
        let runs = &variants[*n];
        out.push_str(&format!("| {n} |"));
        let mut meets_all = vec![true; runs.len()];
        for t in targets {
            let reference = references.iter().find(|r| r.condition == t.condition);
            // (index of the run, value); a run without the condition misses the target, and so
            // does a NaN.
            let mut values = Vec::new();
            let mut below = Vec::new();
            for (i, (seed, f, _)) in runs.iter().enumerate() {
                let row = f.eval.rows.iter().find(|r| r.condition == t.condition);
                let value = row.and_then(|r| match t.measure {
                    Measure::Retention => Some(r.retention),
                    Measure::Fraction => reference.map(|x| fraction_of(f, r, x)),
                });
                let meets = value.is_some_and(|v| v >= t.threshold);
                if !meets {
                    meets_all[i] = false;
                }
                if let Some(v) = value {
                    values.push((i, v));
                    if !meets {
                        below.push(seed.as_str());
                    }
                }
            }
            if values.is_empty() {
                out.push_str(" - |");
                continue;
            }
            let (mean, std, (worst_index, worst)) = seed_summary(&values.iter().map(|v| v.1).collect::<Vec<_>>());
            let below = if below.is_empty() { "none".to_string() } else { below.join(", ") };
            let worst_seed = &runs[values[worst_index].0].0;
            if values.len() == 1 {
                out.push_str(&format!(" {mean:.2} (seed {worst_seed}), below: {below} |"));
            } else {
                out.push_str(&format!(" {mean:.2} ± {std:.2}, worst {worst:.2} (seed {worst_seed}), below: {below} |"));
            }
        }
        let missing: Vec<&str> =
            runs.iter().zip(&meets_all).filter(|(_, ok)| !**ok).map(|(r, _)| r.0.as_str()).collect();
        let met = runs.len() - missing.len();
        out.push_str(&format!(" {met} of {}", runs.len()));
        if !missing.is_empty() {
            out.push_str(&format!(" (not: {})", missing.join(", ")));
        }
        out.push_str(" |\n");
    }
    out
}

/// A run's score under one of its evaluation's rows as a fraction of `reference`:
/// (score - random) / (reference - random), the table's bracketed figure and a fraction target's.
fn fraction_of(run: &RunFigures, row: &EvalRow, reference: &FolderReference) -> f64 {
    reference_fraction(row.score(run.eval.config.score).0, reference.score, run.eval.random_score().0)
}

/// A variant's runs' `all` scores.
fn all_scores(variant: &str, runs: &Runs) -> anyhow::Result<Vec<f64>> {
    let mut scores = Vec::new();
    for (_, f, dir) in runs {
        let Some(row) = f.eval.rows.iter().find(|r| r.spec == Condition::All) else {
            bail!("{}: its evaluation has no `all` row, so `{variant}` cannot be a reference", dir.display());
        };
        scores.push(row.score(f.eval.config.score).0);
    }
    Ok(scores)
}

/// The folder's references (see the module's documentation), in the order of `conditions`, and
/// the specialist variants (which get no column).
fn folder_references(
    results: &Path,
    named: &BTreeMap<String, String>,
    variants: &BTreeMap<String, Runs>,
    conditions: &[String],
) -> anyhow::Result<(Vec<FolderReference>, Vec<String>)> {
    let known = || variants.keys().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ");
    // Modality -> specialist variant: the convention, then what references.toml names.
    let mut specialists: BTreeMap<String, (String, String)> = variants
        .keys()
        .filter_map(|v| v.strip_prefix(SPECIALIST_PREFIX).map(|m| (m.to_string(), (v.clone(), String::new()))))
        .collect();
    for (key, variant) in named {
        if !variants.contains_key(variant) {
            bail!(
                "{}: `{key} = \"{variant}\"`: no variant `{variant}` here (run folders <variant>-s<seed>; variants: {})",
                results.join(REFERENCES_FILE).display(),
                known()
            );
        }
        if key != "all" {
            specialists.insert(key.clone(), (variant.clone(), format!(", named in {REFERENCES_FILE}")));
        }
    }
    let mut special: Vec<String> = variants.keys().filter(|v| v.starts_with(SPECIALIST_PREFIX)).cloned().collect();
    special.extend(specialists.values().map(|(v, _)| v.clone()).filter(|v| !v.starts_with(SPECIALIST_PREFIX)));
    let mut found = Vec::new();
    for (modality, (variant, how)) in &specialists {
        let condition = Condition::Only { modality: modality.clone() }.label();
        if !conditions.contains(&condition) {
            bail!(
                "specialist `{variant}` for `{modality}`: the evaluations here have no `{condition}` condition \
                 (conditions: {})",
                conditions.join(", ")
            );
        }
        let runs = &variants[variant];
        for (_, f, dir) in runs {
            let other = f.eval.rows.iter().find_map(|r| match &r.spec {
                Condition::All => None,
                Condition::Only { modality: m }
                | Condition::Without { modality: m }
                | Condition::PerStep { modality: m, .. }
                | Condition::Noise { modality: m, .. }
                | Condition::Frozen { modality: m } => (m != modality).then(|| m.clone()),
            });
            if let Some(other) = other {
                bail!(
                    "{}: a specialist for `{modality}` is trained on `{modality}` alone, but its evaluation has \
                     `{other}` conditions: train it with the other sensors off and evaluate it alone",
                    dir.display()
                );
            }
        }
        found.push(FolderReference::new(condition, variant, format!("trained on {modality} alone{how}"), runs)?);
    }
    let full = match named.get("all") {
        Some(variant) if special.contains(variant) => {
            bail!(
                "{}: `all = \"{variant}\"` is a specialist, not a full-sensor run",
                results.join(REFERENCES_FILE).display()
            )
        }
        Some(variant) => Some((variant.clone(), format!("named in {REFERENCES_FILE}"))),
        None if !found.is_empty() => {
            let mut best: Option<(String, f64)> = None;
            for (v, runs) in variants.iter().filter(|(v, _)| !special.contains(v)) {
                let score = Episodes::mean_std(&all_scores(v, runs)?).0;
                if best.as_ref().is_none_or(|(_, b)| score > *b) {
                    best = Some((v.clone(), score));
                }
            }
            best.map(|(v, _)| (v, "the best variant's mean with every sensor".to_string()))
        }
        None => None,
    };
    if let Some((variant, how)) = full {
        found.push(FolderReference::new(Condition::All.label(), &variant, how, &variants[&variant])?);
    }
    found.sort_by_key(|r| conditions.iter().position(|c| *c == r.condition));
    special.sort();
    Ok((found, special))
}

/// (step, the training episodes' score) for the updates in which episodes ended: their return, or
/// return / length for per-step scores.
fn training_curve(metrics: &Path, score: Score) -> anyhow::Result<Vec<(f64, f64)>> {
    let returns = csv_series(metrics, "global_step", "charts/episodic_return")?;
    if score == Score::Return {
        return Ok(returns);
    }
    let lengths = csv_series(metrics, "global_step", "charts/episodic_length")?;
    Ok(returns
        .iter()
        .filter_map(|&(x, r)| lengths.iter().find(|&&(lx, _)| lx == x).map(|&(_, l)| (x, r / l)))
        .collect())
}

/// The evaluated runs of `folder` by variant (only `variant`'s with `Some`), seeds in numeric
/// order, and the run directories left out for want of an `eval/eval.json`.
fn read_variants(folder: &Path, variant: Option<&str>) -> anyhow::Result<(BTreeMap<String, Runs>, Vec<PathBuf>)> {
    let mut variants: BTreeMap<String, Runs> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let Some((name, seed)) = variant_and_seed(&name) else { continue };
        if variant.is_some_and(|v| v != name) {
            continue;
        }
        if !dir.join("eval/eval.json").is_file() {
            skipped.push(dir);
            continue;
        }
        let figures = read_run(&dir)?;
        variants.entry(name).or_default().push((seed, figures, dir));
    }
    // Seeds in numeric order (the folder's order puts s10 before s2).
    for runs in variants.values_mut() {
        runs.sort_by_key(|(seed, _, _)| seed.parse::<u64>().unwrap_or(u64::MAX));
    }
    Ok((variants, skipped))
}

/// Whether a variant name is another results folder's (`<folder>/<variant>`, named in
/// `references.toml`): a run directory's own name never holds a `/`.
fn in_another_folder(variant: &str) -> bool {
    variant.contains('/')
}

/// The runs of a reference that `references.toml` names by path (`key = "<folder>/<variant>"`,
/// relative to `results`), or None for a variant of `results` itself.
fn read_reference_elsewhere(results: &Path, key: &str, name: &str) -> anyhow::Result<Option<Runs>> {
    if !in_another_folder(name) {
        return Ok(None);
    }
    let file = results.join(REFERENCES_FILE);
    let path = results.join(name);
    let (Some(folder), Some(variant)) = (path.parent(), path.file_name().and_then(|v| v.to_str())) else {
        bail!("{}: `{key} = \"{name}\"` names no variant (expected `<results folder>/<variant>`)", file.display());
    };
    if !folder.is_dir() {
        bail!(
            "{}: `{key} = \"{name}\"`: no folder {} (a reference in another results folder is \
             `<folder>/<variant>`, relative to this folder)",
            file.display(),
            folder.display()
        );
    }
    let (mut found, _) = read_variants(folder, Some(variant))?;
    match found.remove(variant) {
        Some(runs) => Ok(Some(runs)),
        None => bail!(
            "{}: `{key} = \"{name}\"`: no evaluated runs `{variant}-s<seed>/eval/eval.json` in {}",
            file.display(),
            folder.display()
        ),
    }
}

/// The results table of `results` (a folder of `<variant>-s<seed>` run directories; see the
/// module's documentation), its chart written there. `generated_by`: the command that made it,
/// for the table's first line.
pub fn results_table(results: &Path, generated_by: &str) -> anyhow::Result<ResultsTable> {
    let (mut variants, skipped) = read_variants(results, None)?;
    if variants.is_empty() {
        bail!("no evaluated runs (<variant>-s<seed>/eval/eval.json) under {}", results.display());
    }
    let ReferencesFile { names: named, targets } = read_references_file(results)?;
    // References in other results folders join as variants that get no column or training row.
    for (key, name) in &named {
        if let Some(runs) = read_reference_elsewhere(results, key, name)? {
            variants.insert(name.clone(), runs);
        }
    }

    // Conditions in the evaluation's order, from the first run of this folder that is not a
    // specialist (a specialist's evaluation has its own sensor's conditions only); every run
    // must share its protocol.
    let is_specialist = |v: &str| v.starts_with(SPECIALIST_PREFIX) || named.iter().any(|(k, n)| k != "all" && n == v);
    let Some(first_variant) = variants.keys().find(|v| !is_specialist(v.as_str()) && !in_another_folder(v)) else {
        bail!(
            "{}: only specialists ({SPECIALIST_PREFIX}<modality>) here: nothing to compare with them",
            results.display()
        );
    };
    let first = &variants[first_variant][0].1.eval;
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
    let (references, specialists) = folder_references(results, &named, &variants, &conditions)?;
    let targets = folder_targets(results, &targets, &conditions, &references)?;
    if references.is_empty() {
        if let Some((_, _, dir)) = variants.values().flatten().find(|(_, f, _)| !f.eval.references.is_empty()) {
            eprintln!(
                "note: {} was evaluated with references (evaluate --specialist); report compares with the \
                 specialist-<modality> variants of the folder, and there are none",
                dir.display()
            );
        }
    }
    let order = ["m3ixup", "gmc", "none", "dropout"];
    let mut names: Vec<&String> =
        variants.keys().filter(|v| !specialists.contains(v) && !in_another_folder(v)).collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));

    let mut out = String::new();
    out.push_str(&format!("Generated by `{generated_by}` from the run folders there.\n\n"));
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
    if !references.is_empty() {
        out.push_str(
            "In square brackets, against a reference: (score - random) / (reference - random), the mean over training \
             seeds and the worst seed. References (the mean ± std over their seeds, n - 1, and their own worst seed \
             as a fraction of that mean): ",
        );
        let described: Vec<String> = references.iter().map(FolderReference::describe).collect();
        out.push_str(&described.join("; "));
        out.push_str(".\n\n");
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
            let reference = references.iter().find(|r| r.condition == *c);
            let (mut scores, mut retention, mut fractions) = (Vec::new(), Vec::new(), Vec::new());
            for (_, f, _) in runs {
                if let Some(r) = f.eval.rows.iter().find(|r| r.condition == *c) {
                    let score = r.score(f.eval.config.score).0;
                    scores.push(score);
                    retention.push(r.retention);
                    if let Some(x) = reference {
                        fractions.push(fraction_of(f, r, x));
                    }
                }
            }
            if scores.is_empty() {
                out.push_str(" - |");
            } else {
                let (score, spread) = Episodes::mean_std(&scores);
                let spread = if scores.len() > 1 { format!(" ± {spread:.3}") } else { String::new() };
                let vs = match fractions.len() {
                    0 => String::new(),
                    1 => format!(" [{:.2}]", fractions[0]),
                    _ => format!(
                        " [{:.2}, worst {:.2}]",
                        Episodes::mean_std(&fractions).0,
                        fractions.iter().copied().fold(f64::INFINITY, |a, b| if a.is_nan() || b.is_nan() {
                            f64::NAN
                        } else {
                            a.min(b)
                        })
                    ),
                };
                out.push_str(&format!(" {score:.3}{spread} ({:.2}){vs} |", Episodes::mean_std(&retention).0));
            }
        }
        out.push('\n');
    }
    if !targets.is_empty() {
        out.push('\n');
        out.push_str(&targets_section(&targets, &names, &variants, &references));
    }
    let per_step = first.config.score == Score::PerStep;
    let (measure, unit) = if per_step { ("per-step reward", "reward per step") } else { ("return", "return") };
    out.push_str(&format!("\nTraining (per seed): {measure} of the training episodes (stochastic policy) ending in the last 10 updates with an episode end; "));
    if per_step {
        out.push_str("env steps until its 10-point moving average first reached -1.0; wall time; env steps/s (runs shared the 2 cores with other jobs).\n\n");
        out.push_str("| variant | seed | final reward/step | steps to -1.0 | wall time | env steps/s |\n|---|---:|---:|---:|---:|---:|\n");
    } else {
        out.push_str("wall time; env steps/s (runs shared the 2 cores with other jobs).\n\n");
        out.push_str("| variant | seed | final return | wall time | env steps/s |\n|---|---:|---:|---:|---:|\n");
    }
    let mut series = Vec::new();
    for n in names.iter().copied().chain(specialists.iter().filter(|s| !in_another_folder(s))) {
        for (seed, f, _) in &variants[n] {
            let reached = match (per_step, f.steps_to_minus_one) {
                (false, _) => String::new(),
                (true, Some(s)) => format!(" {:.0}k |", s / 1000.0),
                (true, None) => " not reached |".into(),
            };
            out.push_str(&format!(
                "| {n} | {seed} | {:.3} |{reached} {:.0} min | {:.0} |\n",
                f.final_training_score,
                f.wall_seconds / 60.0,
                f.sps
            ));
            series.push(Series::new(format!("{n} s{seed}"), f.smoothed_curve.clone()));
        }
    }
    let folder = folder_name(results);
    let chart = results.join("learning_curves.png");
    write_line_chart(
        &chart,
        &LineChart {
            title: &format!("{folder}: training episodes' {unit} (10-point moving average)"),
            x_label: "environment steps",
            y_label: unit,
            series: &series,
        },
    )?;
    out.push_str(&format!("\n![learning curves]({})\n", chart.display()));
    Ok(ResultsTable { markdown: out, chart, skipped })
}

/// The small files of a run that a results folder keeps (not its checkpoints): what `train`
/// and `evaluate` write that the table and a reader of the results need.
pub const RESULT_FILES: [&str; 7] = [
    "config.toml",
    "metrics.csv",
    "learning_curve.png",
    "eval/eval.md",
    "eval/eval.csv",
    "eval/eval.json",
    "eval/dropout.png",
];

/// Copies each run directory's [`RESULT_FILES`] that exist into `results/<the run's name>/`,
/// each file written atomically (a reader never sees half a file); returns the folders
/// written. Runs are named `<variant>-s<seed>` for the table.
pub fn collect_runs(results: &Path, runs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for run in runs {
        if !run.join("config.toml").is_file() {
            bail!("{}: no config.toml there (is it a run directory?)", run.display());
        }
        let Some(name) = run.file_name() else {
            bail!("{}: expected a run directory's path ending in its name", run.display());
        };
        let dest = results.join(name);
        for file in RESULT_FILES {
            let source = run.join(file);
            if source.is_file() {
                let bytes = std::fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
                let target = dest.join(file);
                let folder = target.parent().unwrap_or(&dest);
                std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
                write_atomic(&target, &bytes).with_context(|| format!("cannot write {}", target.display()))?;
            }
        }
        written.push(dest);
    }
    Ok(written)
}

/// The results folder's name: the chart's title and the README section's NAME.
fn folder_name(results: &Path) -> String {
    results.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// Replaces the text between `<!-- results:NAME:begin -->` and `<!-- results:NAME:end -->` in
/// `readme` (NAME: the name of the results folder `results`) with `table`, atomically.
pub fn replace_readme_section(readme: &Path, results: &Path, table: &str) -> anyhow::Result<()> {
    let folder = folder_name(results);
    let text = std::fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let begin = format!("<!-- results:{folder}:begin -->");
    let end = format!("<!-- results:{folder}:end -->");
    let (Some(a), Some(b)) = (text.find(&begin), text.find(&end)) else {
        bail!("{} has no `{begin}` ... `{end}` section", readme.display());
    };
    if b < a {
        bail!("{}: `{end}` comes before `{begin}`", readme.display());
    }
    let updated = format!("{}{begin}\n{table}{}", &text[..a], &text[b..]);
    write_atomic(readme, updated.as_bytes())?;
    Ok(())
}
