//! `report` on results folders: a committed folder renders as the README shows it, and
//! specialist variants (`specialist-<modality>-s<seed>`, or named in `references.toml`) add the
//! fraction against them beside the retention, by value; bad references are named; `--collect`
//! copies runs' small files in.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use m3ixup::agents::evaluate::{retention_ratio, Condition, EvalConfig, EvalReport, EvalRow, Score};

mod common;
use common::fresh_dir;

const RANDOM: f64 = -6.0;

fn protocol() -> EvalConfig {
    EvalConfig {
        episodes: 10,
        steps: 200,
        score: Score::PerStep,
        dropout_p: vec![0.5],
        noise_sigma: vec![],
        frozen: false,
        ..EvalConfig::default()
    }
}

/// Writes `<results>/<run>/eval/eval.json` with these per-step scores (condition, score; the
/// first must be `all`) and a `metrics.csv` of two updates.
fn write_run(results: &Path, run: &str, scores: &[(Condition, f64)]) {
    write_run_scored(results, run, scores, Score::PerStep)
}

/// [`write_run`], evaluated with `score` as the protocol's score.
fn write_run_scored(results: &Path, run: &str, scores: &[(Condition, f64)], score: Score) {
    let dir = results.join(run);
    fs::create_dir_all(dir.join("eval")).unwrap();
    let full = scores[0].1;
    let rows = scores
        .iter()
        .map(|(c, score)| EvalRow {
            agent: run.to_string(),
            condition: c.label(),
            spec: c.clone(),
            per_step_mean: *score,
            per_step_std: 0.5,
            return_mean: score * 200.0,
            return_std: 100.0,
            length_mean: 200.0,
            retention: retention_ratio(*score, full, RANDOM),
            vs_reference: None,
        })
        .collect();
    let report = EvalReport {
        env: "multimodal-pendulum".into(),
        config: EvalConfig { score, ..protocol() },
        random_per_step_mean: RANDOM,
        random_per_step_std: 1.0,
        random_return_mean: RANDOM * 200.0,
        random_return_std: 200.0,
        noise_scales: Default::default(),
        agents: vec![run.to_string()],
        rows,
        references: vec![],
        wall_seconds: 1.0,
    };
    fs::write(dir.join("eval/eval.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    fs::write(
        dir.join("metrics.csv"),
        "global_step,charts/episodic_return,charts/episodic_length,time/elapsed_seconds,time/sps\n\
         2048,-1000,200,10,200\n4096,-800,200,20,205\n",
    )
    .unwrap();
}

fn only(m: &str) -> Condition {
    Condition::Only { modality: m.into() }
}

fn dropped(m: &str) -> Condition {
    Condition::PerStep { modality: m.into(), p: 0.5 }
}

/// A two-sensor agent's run: all, pixels only, sound only, pixels p=0.5.
fn agent_run(results: &Path, run: &str, all: f64, pixels: f64, sound: f64) {
    write_run(
        results,
        run,
        &[(Condition::All, all), (only("pixels"), pixels), (only("sound"), sound), (dropped("pixels"), all - 0.1)],
    );
}

/// A specialist's run, evaluated alone: every sensor it has (`modality`), and it dropped.
fn specialist_run(results: &Path, run: &str, modality: &str, score: f64) {
    write_run(results, run, &[(Condition::All, score), (dropped(modality), score - 1.0)]);
}

/// m3ixup (2 seeds), none (1 seed), specialist-pixels (2 seeds, mean -1.5), specialist-sound
/// (1 seed, -2.0); random -6.
fn folder_with_specialists(tag: &str) -> PathBuf {
    let results = fresh_dir(tag).join("pendulum");
    agent_run(&results, "m3ixup-s1", -1.5, -2.0, -3.0);
    agent_run(&results, "m3ixup-s2", -1.0, -2.5, -3.8);
    agent_run(&results, "none-s1", -0.5, -5.0, -5.4);
    specialist_run(&results, "specialist-pixels-s1", "pixels", -1.0);
    specialist_run(&results, "specialist-pixels-s2", "pixels", -2.0);
    specialist_run(&results, "specialist-sound-s1", "sound", -2.0);
    results
}

fn report(results: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_report")).args(["--results", &results.display().to_string()]).output().unwrap()
}

fn stdout_of(results: &Path) -> String {
    let out = report(results);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn stderr_of_failing(results: &Path) -> String {
    let out = report(results);
    assert!(!out.status.success(), "expected an error, got:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The cells of the table row `| condition | ... |`.
fn cells(table: &str, condition: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {condition} |")))
        .unwrap_or_else(|| panic!("no `{condition}` row in\n{table}"));
    line.trim_matches('|').split('|').skip(1).map(|c| c.trim().to_string()).collect()
}

#[test]
fn the_training_table_measures_what_the_evaluation_scores() {
    // metrics.csv: returns -1000 and -800 over 200-step episodes (-5 and -4 per step).
    let per_step = fresh_dir("report-training-per-step").join("pendulum");
    write_run(&per_step, "m3ixup-s1", &[(Condition::All, -1.0)]);
    let table = stdout_of(&per_step);
    assert!(table.contains("| variant | seed | final reward/step | steps to -1.0 |"), "{table}");
    assert!(table.contains("| m3ixup | 1 | -4.500 | not reached | 0 min | 205 |"), "{table}");
    // By return (a task paying a constant reward per step): the training episodes' return, and
    // no per-step threshold, which only the pendulum's reward scale gives a meaning.
    let by_return = fresh_dir("report-training-return").join("cartpole");
    write_run_scored(&by_return, "m3ixup-s1", &[(Condition::All, -1.0)], Score::Return);
    let table = stdout_of(&by_return);
    assert!(table.contains("| variant | seed | final return | wall time | env steps/s |"), "{table}");
    assert!(table.contains("| m3ixup | 1 | -900.000 | 0 min | 205 |"), "{table}");
    assert!(!table.contains("steps to -1.0") && !table.contains("reward/step"), "{table}");
}

#[test]
fn a_committed_results_folder_without_specialists_renders_as_the_readme_shows_it() {
    // The README's generated section for results/ppo-pendulum-aux-rows, from a copy of its files.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("results/ppo-pendulum-aux-rows");
    let results = fresh_dir("committed").join("ppo-pendulum-aux-rows");
    for entry in fs::read_dir(&source).unwrap() {
        let run = entry.unwrap().path();
        if !run.is_dir() {
            continue;
        }
        let dest = results.join(run.file_name().unwrap());
        fs::create_dir_all(dest.join("eval")).unwrap();
        fs::copy(run.join("metrics.csv"), dest.join("metrics.csv")).unwrap();
        fs::copy(run.join("eval/eval.json"), dest.join("eval/eval.json")).unwrap();
    }
    let text = stdout_of(&results).replace(&results.display().to_string(), "results/ppo-pendulum-aux-rows");
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let begin = "<!-- results:ppo-pendulum-aux-rows:begin -->\n";
    let section = &readme
        [readme.find(begin).unwrap() + begin.len()..readme.find("<!-- results:ppo-pendulum-aux-rows:end -->").unwrap()];
    assert_eq!(text.trim_end(), section.trim_end());
    assert!(!text.contains("reference"), "no specialists, no reference text");
}

#[test]
fn without_specialists_the_cells_have_no_reference_fraction() {
    let results = fresh_dir("plain").join("pendulum");
    agent_run(&results, "m3ixup-s1", -1.5, -2.0, -3.0);
    agent_run(&results, "m3ixup-s2", -1.0, -2.5, -3.8);
    let text = stdout_of(&results);
    assert_eq!(cells(&text, "pixels only"), ["-2.250 ± 0.250 (0.79)"]);
    assert_eq!(cells(&text, "all"), ["-1.250 ± 0.250 (1.00)"]);
    assert!(!text.contains("References"), "{text}");
}

#[test]
fn specialist_variants_give_each_single_sensor_row_its_fraction_mean_and_worst_seed() {
    let results = folder_with_specialists("specialists");
    let text = stdout_of(&results);
    // Specialists get no column; the agents keep theirs, in the usual order.
    assert!(text.contains("| condition | m3ixup (2 seeds) | none (1 seeds) |\n"), "{text}");
    // pixels only against specialist-pixels (mean -1.5): m3ixup (-2 + 6) / 4.5 = 0.889 and
    // (-2.5 + 6) / 4.5 = 0.778, mean 0.833; none (-5 + 6) / 4.5 = 0.222.
    assert_eq!(cells(&text, "pixels only"), ["-2.250 ± 0.250 (0.79) [0.83, worst 0.78]", "-5.000 (0.18) [0.22]"]);
    // sound only against specialist-sound (-2): 3 / 4 = 0.75 and 2.2 / 4 = 0.55; none 0.6 / 4.
    assert_eq!(cells(&text, "sound only"), ["-3.400 ± 0.400 (0.55) [0.65, worst 0.55]", "-5.400 (0.11) [0.15]"]);
    // all against the best variant's mean with every sensor (none, -0.5): 4.5 / 5.5, 5 / 5.5.
    assert_eq!(cells(&text, "all"), ["-1.250 ± 0.250 (1.00) [0.86, worst 0.82]", "-0.500 (1.00) [1.00]"]);
    // Other conditions have no reference.
    assert_eq!(cells(&text, "pixels p=0.5"), ["-1.350 ± 0.250 (0.98)", "-0.600 (0.98)"]);
    for reference in [
        "`all`: `none`, the best variant's mean with every sensor (1 seed), -0.500",
        // Its mean, its std over seeds (n - 1) and its own worst seed against the mean: 4 / 4.5.
        "`pixels only`: `specialist-pixels`, trained on pixels alone (2 seeds), -1.500 ± 0.707, its worst seed 0.89 of that",
        "`sound only`: `specialist-sound`, trained on sound alone (1 seed), -2.000",
    ] {
        assert!(text.contains(reference), "{reference} in\n{text}");
    }
    // The specialists' training is listed with the others'.
    assert!(text.contains("| specialist-pixels | 2 |") && text.contains("| specialist-sound | 1 |"), "{text}");
}

#[test]
fn references_toml_names_the_full_sensor_reference_and_the_specialists() {
    let results = folder_with_specialists("named");
    fs::write(results.join("references.toml"), "all = \"m3ixup\"\n").unwrap();
    let text = stdout_of(&results);
    // all against m3ixup's own mean (-1.25): 4.5 / 4.75 = 0.947, 5 / 4.75 = 1.053.
    assert_eq!(cells(&text, "all")[0], "-1.250 ± 0.250 (1.00) [1.00, worst 0.95]");
    assert!(
        text.contains("`all`: `m3ixup`, named in references.toml (2 seeds), -1.250 ± 0.354, its worst seed 0.95"),
        "{text}"
    );

    // A specialist under another name: `sound = "sound-expert"` (-4: sound only 3 / 2, 2.2 / 2).
    fs::rename(results.join("specialist-sound-s1"), results.join("sound-expert-s1")).unwrap();
    write_run(&results, "sound-expert-s1", &[(Condition::All, -4.0), (dropped("sound"), -5.0)]);
    fs::write(results.join("references.toml"), "sound = \"sound-expert\"\n").unwrap();
    let text = stdout_of(&results);
    assert_eq!(cells(&text, "sound only")[0], "-3.400 ± 0.400 (0.55) [1.30, worst 1.10]");
    assert!(!text.contains("sound-expert (1 seeds)"), "a named specialist gets no column:\n{text}");
    assert!(text.contains("`sound-expert`, trained on sound alone, named in references.toml"), "{text}");
}

#[test]
fn references_toml_can_name_runs_in_another_results_folder() {
    let results = folder_with_specialists("elsewhere");
    // A sibling folder of references: a sound specialist over two seeds (mean -1.5) and a
    // full-sensor baseline (-0.5), neither copied into the study's folder.
    let shared = results.parent().unwrap().join("references");
    specialist_run(&shared, "sound-ep12-s1", "sound", -1.0);
    specialist_run(&shared, "sound-ep12-s2", "sound", -2.0);
    agent_run(&shared, "baseline-s1", -0.5, -4.0, -4.0);
    fs::write(
        results.join("references.toml"),
        "all = \"../references/baseline\"\nsound = \"../references/sound-ep12\"\n",
    )
    .unwrap();
    let text = stdout_of(&results);
    // sound only against -1.5: m3ixup (-3 + 6) / 4.5 = 0.667 and 2.2 / 4.5 = 0.489.
    assert_eq!(cells(&text, "sound only")[0], "-3.400 ± 0.400 (0.55) [0.58, worst 0.49]");
    // all against the baseline's -0.5: 4.5 / 5.5 and 5 / 5.5.
    assert_eq!(cells(&text, "all")[0], "-1.250 ± 0.250 (1.00) [0.86, worst 0.82]");
    assert!(
        text.contains("`sound only`: `../references/sound-ep12`, trained on sound alone, named in references.toml (2 seeds), -1.500"),
        "{text}"
    );
    assert!(text.contains("`all`: `../references/baseline`, named in references.toml (1 seed), -0.500"), "{text}");
    // They are that folder's runs: no column and no training row here.
    assert!(text.contains("| condition | m3ixup (2 seeds) | none (1 seeds) |\n"), "{text}");
    assert!(!text.contains("| ../references/"), "{text}");

    // A folder that is not there, and one without the variant's runs, are named.
    fs::write(results.join("references.toml"), "sound = \"../missing/sound-ep12\"\n").unwrap();
    let err = stderr_of_failing(&results);
    assert!(err.contains("references.toml") && err.contains("no folder") && err.contains("missing"), "{err}");
    fs::write(results.join("references.toml"), "sound = \"../references/sound-ep16\"\n").unwrap();
    let err = stderr_of_failing(&results);
    assert!(err.contains("no evaluated runs `sound-ep16-s<seed>") && err.contains("references"), "{err}");
}

#[test]
fn bad_references_are_errors_that_name_the_problem() {
    let results = folder_with_specialists("bad");
    fs::write(results.join("references.toml"), "all = \"gmc\"\n").unwrap();
    let err = stderr_of_failing(&results);
    assert!(err.contains("no variant `gmc`") && err.contains("`m3ixup`"), "{err}");

    fs::write(results.join("references.toml"), "all = \"specialist-pixels\"\n").unwrap();
    let err = stderr_of_failing(&results);
    assert!(err.contains("is a specialist"), "{err}");

    fs::write(results.join("references.toml"), "all = 3\n").unwrap();
    let err = stderr_of_failing(&results);
    assert!(err.contains("must name a variant"), "{err}");
    fs::remove_file(results.join("references.toml")).unwrap();

    // A specialist for a sensor the evaluations have no `only` condition of.
    specialist_run(&results, "specialist-lidar-s1", "lidar", -1.0);
    let err = stderr_of_failing(&results);
    assert!(err.contains("specialist-lidar") && err.contains("no `lidar only` condition"), "{err}");
    fs::remove_dir_all(results.join("specialist-lidar-s1")).unwrap();

    // A "specialist" that was evaluated with both sensors is not one.
    agent_run(&results, "specialist-pixels-s3", -1.0, -1.0, -1.0);
    let err = stderr_of_failing(&results);
    assert!(err.contains("specialist-pixels-s3") && err.contains("`sound` conditions"), "{err}");
}

/// The targets row of `variant` in the targets section.
fn target_cells(table: &str, variant: &str) -> Vec<String> {
    let section =
        &table[table.find("Against the targets").unwrap_or_else(|| panic!("no targets section in\n{table}"))..];
    cells(section, variant)
}

#[test]
fn targets_check_every_seed_and_name_the_seeds_below_them() {
    let results = folder_with_specialists("targets");
    agent_run(&results, "m3ixup-s10", -1.2, -1.8, -2.5);
    fs::write(
        results.join("references.toml"),
        "all = \"m3ixup\"\n[targets]\n\"pixels only\" = { fraction = 0.8 }\n\"pixels p=0.5\" = { retention = 0.9795 }\n",
    )
    .unwrap();
    let text = stdout_of(&results);
    // Seeds in numeric order: 1, 2, 10 (not the folder's 1, 10, 2).
    let training = &text[text.find("| variant | seed |").unwrap()..];
    let seeds: Vec<&str> = training.lines().filter(|l| l.starts_with("| m3ixup | ")).map(|l| &l[11..14]).collect();
    assert_eq!(seeds, ["1 |", "2 |", "10 "], "{text}");
    assert!(
        text.contains(
            "| variant | pixels only: fraction ≥ 0.8 | pixels p=0.5: retention ≥ 0.9795 | seeds meeting every target |"
        ),
        "{text}"
    );
    // pixels only against specialist-pixels (-1.5, random -6): seeds 1, 2, 10 give 4 / 4.5,
    // 3.5 / 4.5, 4.2 / 4.5 = 0.889, 0.778, 0.933: mean 0.867, std (n - 1) 0.0802, seed 2 below 0.8.
    // pixels p=0.5 is all - 0.1: retention 1 - 0.1 / (all + 6) = 0.9778, 0.98, 0.9792; none:
    // 1 - 0.1 / 5.5 = 0.9818.
    assert_eq!(
        target_cells(&text, "m3ixup"),
        [
            "0.87 ± 0.08, worst 0.78 (seed 2), below: 2",
            "0.98 ± 0.00, worst 0.98 (seed 1), below: 1, 10",
            "0 of 3 (not: 1, 2, 10)"
        ]
    );
    // none, one seed (no spread): pixels only (-5 + 6) / 4.5 = 0.22.
    assert_eq!(
        target_cells(&text, "none"),
        ["0.22 (seed 1), below: 1", "0.98 (seed 1), below: none", "0 of 1 (not: 1)"]
    );
    fs::write(results.join("references.toml"), "[targets]\n\"all\" = { fraction = 0.8 }\n").unwrap();
    let text = stdout_of(&results);
    // all against the best variant's mean (none, -0.5): m3ixup 4.5 / 5.5, 5 / 5.5, 4.8 / 5.5.
    assert_eq!(target_cells(&text, "m3ixup"), ["0.87 ± 0.05, worst 0.82 (seed 1), below: none", "3 of 3"]);
    // Without targets there is no such section.
    fs::remove_file(results.join("references.toml")).unwrap();
    assert!(!stdout_of(&results).contains("Against the targets"));
}

#[test]
fn bad_targets_are_errors_that_name_the_condition() {
    let results = folder_with_specialists("bad-targets");
    let cases = [
        (
            "[targets]\n\"lidar only\" = { fraction = 0.9 }\n",
            "\"lidar only\": the evaluations here have no such condition",
        ),
        (
            "[targets]\n\"pixels p=0.5\" = { fraction = 0.9 }\n",
            "\"pixels p=0.5\" sets a fraction, but `pixels p=0.5` has no reference",
        ),
        ("[targets]\n\"all\" = { }\n", "\"all\" sets neither `fraction` nor `retention`"),
        ("[targets]\n\"all\" = { fraction = nan }\n", "\"all\" fraction must be a finite number"),
        ("[targets]\n\"all\" = { fractoin = 0.9 }\n", "[targets] maps a condition to its thresholds"),
        ("targets = 0.9\n", "[targets] maps a condition to its thresholds"),
    ];
    for (file, expected) in cases {
        fs::write(results.join("references.toml"), file).unwrap();
        let err = stderr_of_failing(&results);
        assert!(err.contains(expected) && err.contains("references.toml"), "{file}: {err}");
    }
}

#[test]
fn collect_copies_a_runs_small_files_but_not_its_checkpoints_then_tables_them() {
    let dir = fresh_dir("collect");
    let runs = dir.join("runs");
    agent_run(&runs, "m3ixup-s1", -1.5, -2.0, -3.0);
    let run = runs.join("m3ixup-s1");
    fs::write(run.join("config.toml"), "algo = \"ppo\"\n").unwrap();
    fs::create_dir_all(run.join("checkpoints/update-2")).unwrap();
    fs::write(run.join("checkpoints/update-2/model.mpk"), b"weights").unwrap();
    fs::write(run.join("checkpoint.toml"), "pointer").unwrap();

    let results = dir.join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["--results", &results.display().to_string(), "--collect", &run.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let collected = results.join("m3ixup-s1");
    for file in ["config.toml", "metrics.csv", "eval/eval.json"] {
        assert_eq!(fs::read(collected.join(file)).unwrap(), fs::read(run.join(file)).unwrap(), "{file}");
    }
    assert!(!collected.join("checkpoints").exists() && !collected.join("checkpoint.toml").exists());
    assert!(String::from_utf8(out.stdout).unwrap().contains("| condition | m3ixup (1 seeds) |"));

    let not_a_run = dir.join("not-a-run");
    fs::create_dir_all(&not_a_run).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["--results", &results.display().to_string(), "--collect", &not_a_run.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-a-run: no config.toml there (is it a run directory?)"), "{stderr}");
}
