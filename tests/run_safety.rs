//! A run's files against crashes, a second process and tampering: each test reproduces one way
//! a run used to lose data, block its name or load the wrong weights, through the library (and
//! the `train` binary where the defect was the binary's). Then exact resume: a run stopped at any
//! moment (cleanly, or by `kill -9`) and resumed logs the same metrics, time columns aside, as one
//! never interrupted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use m3ixup::agents::algorithms::ppo::{latest_checkpoint, load_agent, train, PpoConfig, AGENT_FILE};
use m3ixup::agents::infra::checkpoint::{
    load_checkpoint_state, CHECKPOINTS_DIR, CHECKPOINT_POINTER, REPLAY_FILE, STATE_FILE,
};
use m3ixup::agents::infra::harness::{OnRow, Row, TrainOptions, TrainSummary};
use m3ixup::agents::infra::run::RunDir;
use m3ixup::agents::representation::pretrain::{pretrain, PretrainConfig, PretrainOptions};
use m3ixup::config::load;
use m3ixup::device::DeviceArgs;
use m3ixup::jobs::TrainConfig;

mod common;
use common::{backend_rng, config_path, fresh_dir, ppo_smoke};

type Ad = Autodiff<Flex>;

/// Trains `config` in `dir` for at most `max_updates` updates, resuming when asked.
fn run(config: &PpoConfig, dir: &Path, resume: bool, max_updates: Option<usize>) -> TrainSummary {
    let options = TrainOptions { resume, max_updates, ..Default::default() };
    train::<Ad>(config, &RunDir::at(dir).unwrap(), &Default::default(), &options).unwrap()
}

/// `global_step` of every CSV row, and of every JSON line.
fn logged_steps(dir: &Path) -> (Vec<f64>, Vec<f64>) {
    let csv = fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let csv_steps = csv.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    let jsonl = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let json_steps = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["global_step"].as_f64().unwrap())
        .collect();
    (csv_steps, json_steps)
}

fn cut_off(path: &Path, bytes: usize) {
    let text = fs::read(path).unwrap();
    fs::write(path, &text[..text.len() - bytes]).unwrap();
}

#[test]
fn a_cut_off_last_metrics_line_neither_blocks_resume_nor_loses_a_row() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=256", "train.checkpoint_every=1"]); // 4 updates of 64 steps
    for file in ["metrics.jsonl", "metrics.csv"] {
        let dir = fresh_dir(&format!("cut-{file}"));
        run(&config, &dir, false, Some(2));
        // A crash in the middle of the second row's write (after its checkpoint).
        cut_off(&dir.join(file), 30);
        let resumed = run(&config, &dir, true, None);
        assert_eq!(resumed.global_step, 256);
        let (csv, json) = logged_steps(&dir);
        assert_eq!(csv, [64.0, 128.0, 192.0, 256.0], "{file} cut: every update once, the cut row recovered");
        assert_eq!(json, csv, "{file} cut: both files agree");
        fs::remove_dir_all(dir).unwrap();
    }
    // A damaged line that is not the last is still an error naming the file and the line.
    let dir = fresh_dir("cut-middle");
    run(&config, &dir, false, Some(2));
    let jsonl = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    fs::write(dir.join("metrics.jsonl"), jsonl.replacen("{", "{{", 1)).unwrap();
    let err = train::<Ad>(
        &config,
        &RunDir::at(&dir).unwrap(),
        &Default::default(),
        &TrainOptions { resume: true, ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("metrics.jsonl line 1"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_second_process_on_the_same_run_is_refused_while_the_first_holds_it() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=128"]);
    let dir = fresh_dir("lock");
    run(&config, &dir, false, Some(1));
    let held = RunDir::at(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--resume", &dir.display().to_string(), "--quiet"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use by process"), "{err}");
    assert!(err.contains(&std::process::id().to_string()), "names the holder: {err}");
    // In one process too, and free again once the holder is gone.
    assert!(RunDir::at(&dir).unwrap_err().to_string().contains("in use"));
    drop(held);
    let resumed = run(&config, &dir, true, None);
    assert_eq!(resumed.global_step, 128);
    assert_eq!(logged_steps(&dir).0, [64.0, 128.0], "the refused process wrote nothing");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_pointer_leading_outside_its_run_is_refused_and_nothing_is_deleted() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=128"]);
    let (a, b) = (fresh_dir("pointer-a"), fresh_dir("pointer-b"));
    run(&config, &a, false, Some(1));
    run(&config, &b, false, Some(1));
    let a_checkpoint = latest_checkpoint(&a).unwrap().unwrap();
    for pointer in
        ["../pointer-x/checkpoints/update-000001", "/tmp/checkpoints/x", "checkpoints/../../y", "config.toml"]
    {
        let outside = pointer.replace("pointer-x", a.file_name().unwrap().to_str().unwrap());
        fs::write(b.join(CHECKPOINT_POINTER), format!("dir = \"{outside}\"\n")).unwrap();
        let err = train::<Ad>(
            &config,
            &RunDir::at(&b).unwrap(),
            &Default::default(),
            &TrainOptions { resume: true, ..Default::default() },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a checkpoint of this run"), "{pointer}: {err}");
        assert!(a_checkpoint.join(AGENT_FILE).is_file(), "{pointer}: run A keeps its checkpoint");
    }
    fs::remove_dir_all(a).unwrap();
    fs::remove_dir_all(b).unwrap();
}

#[test]
fn a_checkpoint_of_another_config_or_with_damaged_bytes_is_an_error_never_a_silent_load_or_a_panic() {
    let _rng = backend_rng();
    let mut checkpoints = Vec::new();
    for (tag, hidden) in [("h16", "[16]"), ("h32", "[32]"), ("deep", "[16, 16, 16]")] {
        let dir = fresh_dir(&format!("shape-{tag}"));
        run(&ppo_smoke(&["train.total_steps=64", &format!("policy.hidden={hidden}")]), &dir, false, None);
        checkpoints.push((dir.clone(), latest_checkpoint(&dir).unwrap().unwrap()));
    }
    let target = &checkpoints[0].1;
    let original = fs::read(target.join(AGENT_FILE)).unwrap();
    let load_error = || load_agent::<Flex>(target, &Default::default()).err().map(|e| e.to_string());
    assert_eq!(load_error(), None, "its own weights load");

    // Replaced by another config's weights, or one flipped bit: the recorded checksum differs.
    for (i, _) in [(), ()].iter().enumerate() {
        fs::copy(checkpoints[i + 1].1.join(AGENT_FILE), target.join(AGENT_FILE)).unwrap();
        let err = load_error().expect("refused");
        assert!(err.contains("checksum") && err.contains(AGENT_FILE), "{err}");
    }
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    fs::write(target.join(AGENT_FILE), &flipped).unwrap();
    assert!(load_error().expect("refused").contains("checksum"));

    // Without a recorded checksum (checkpoints written before them), shapes are still checked.
    let state = fs::read_to_string(target.join(STATE_FILE)).unwrap();
    let without: String = state.split("[checksums]").next().unwrap().to_string();
    fs::write(target.join(STATE_FILE), without).unwrap();
    fs::copy(checkpoints[1].1.join(AGENT_FILE), target.join(AGENT_FILE)).unwrap();
    let err = load_error().expect("refused");
    assert!(err.contains("has shape") && err.contains("[8, 32]") && err.contains("[8, 16]"), "{err}");
    fs::copy(checkpoints[2].1.join(AGENT_FILE), target.join(AGENT_FILE)).unwrap();
    let err = load_error().expect("refused, not a panic");
    assert!(err.contains("do not fit the config's network"), "{err}");
    fs::write(target.join(AGENT_FILE), &original).unwrap();
    assert_eq!(load_error(), None);
    for (dir, _) in checkpoints {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_one_row_last_minibatch_is_normalised_with_the_minibatch_before_it() {
    let _rng = backend_rng();
    let mean_of = |summary: &TrainSummary, key: &str| {
        let row = &summary.rows[0];
        row.iter().find(|(k, _)| k == key).unwrap().1
    };
    let mut policy_losses = Vec::new();
    for minibatch in ["63", "64"] {
        let dir = fresh_dir(&format!("minibatch-{minibatch}"));
        let config =
            ppo_smoke(&["train.total_steps=64", "aux.kind=\"none\"", &format!("ppo.minibatch_size={minibatch}")]);
        let summary = run(&config, &dir, false, None);
        policy_losses.push(mean_of(&summary, "losses/policy"));
        fs::remove_dir_all(dir).unwrap();
    }
    // With normalised advantages the clipped policy loss stays near 0; one unnormalised row (the
    // pendulum's advantages are tens) once made it 34.5.
    for loss in &policy_losses {
        assert!(loss.abs() < 1.0, "policy losses {policy_losses:?}");
    }
}

#[test]
fn a_run_that_cannot_start_leaves_no_directory_behind() {
    let dir = fresh_dir("no-start");
    let runs = dir.display().to_string();
    let train = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_train"))
            .args(args)
            .args(["--runs-dir", &runs, "--quiet"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let ddpg = config_path("ddpg-smoke.toml").display().to_string();
    let out = train(&["--config", &ddpg, "--set", "pretrained.path=\"no/such/run\"", "--run-name", "ddpg"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pretrained.path") && err.contains("no/such/run"), "{err}");
    assert!(!dir.join("ddpg").exists(), "no directory blocks the name");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_resume_clears_what_a_killed_checkpoint_write_left_and_continues_the_runs_clock() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=192"]);
    let dir = fresh_dir("leftovers");
    let first = run(&config, &dir, false, Some(1));
    let elapsed = |row: &Vec<(String, f64)>| row.iter().find(|(k, _)| k == "time/elapsed_seconds").unwrap().1;
    let clock_at_checkpoint = elapsed(&first.rows[0]);
    // What kill -9 during a checkpoint write leaves: a checkpoint directory nobody points at and
    // temporaries of atomic writes, in the run and in a checkpoint.
    let orphan = dir.join(CHECKPOINTS_DIR).join("update-000002");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join(AGENT_FILE), b"half").unwrap();
    let current = latest_checkpoint(&dir).unwrap().unwrap();
    let temporaries =
        [dir.join(".checkpoint.toml.tmp-4242"), dir.join(".metrics.csv.tmp-17"), current.join(".agent.mpk.tmp-99")];
    for t in &temporaries {
        fs::write(t, b"partial").unwrap();
    }
    let resumed = run(&config, &dir, true, None);
    assert!(!orphan.exists(), "the orphan checkpoint is removed");
    for t in &temporaries {
        assert!(!t.exists(), "{} is removed", t.display());
    }
    assert!(current.join(AGENT_FILE).is_file() || latest_checkpoint(&dir).unwrap().is_some());
    // The clock continues from the checkpoint's, so report sees the run's whole wall time.
    for row in &resumed.rows {
        assert!(elapsed(row) > clock_at_checkpoint, "{} <= {clock_at_checkpoint}", elapsed(row));
    }
    fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Exact resume: the checkpoint carries everything that decides the future (weights, optimiser,
// the environments mid-episode, the loop's state).
// ---------------------------------------------------------------------------------------------

/// Every metrics row of a run as `key=value` cells, without the wall-clock columns (`time/*`),
/// from `metrics.jsonl` and from `metrics.csv` (both must hold the same rows).
fn timeless_metrics(dir: &Path) -> Vec<Vec<String>> {
    let jsonl = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let json_rows: Vec<Vec<String>> = jsonl
        .lines()
        .map(|line| {
            let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            row.into_iter().filter(|(k, _)| !k.starts_with("time/")).map(|(k, v)| format!("{k}={v}")).collect()
        })
        .collect();
    let mut csv = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_string).collect();
    let csv_rows: Vec<Vec<String>> = csv
        .records()
        .map(|r| {
            header
                .iter()
                .zip(r.unwrap().iter())
                .filter(|(k, _)| !k.starts_with("time/"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .collect();
    assert_eq!(json_rows.len(), csv_rows.len(), "{}: both metrics files hold every row", dir.display());
    csv_rows
}

/// A config whose episodes outlast an update (so a resume lands mid-episode), with per-step
/// sensor dropout (its own random stream) and a frame stack: every saved state matters.
fn mid_episode_config() -> PpoConfig {
    ppo_smoke(&[
        "train.total_steps=384",
        "train.checkpoint_every=1",
        "env.params.max_episode_steps=40",
        "env.params.sensor_dropout={ mode = \"per-step\", p = 0.3 }",
    ])
}

#[test]
fn a_ppo_run_stopped_twice_and_resumed_logs_what_an_uninterrupted_run_logs() {
    let _rng = backend_rng();
    let config = mid_episode_config();
    let straight = fresh_dir("straight");
    train::<Ad>(&config, &RunDir::at(&straight).unwrap(), &Default::default(), &TrainOptions::default()).unwrap();

    let stopped = fresh_dir("stopped");
    let run = RunDir::at(&stopped).unwrap();
    for (resume, max_updates) in [(false, Some(2)), (true, Some(1)), (true, None)] {
        let options = TrainOptions { resume, max_updates, ..Default::default() };
        train::<Ad>(&config, &run, &Default::default(), &options).unwrap();
    }
    let (expected, got) = (timeless_metrics(&straight), timeless_metrics(&stopped));
    assert_eq!(expected.len(), 6);
    assert_eq!(got, expected, "the resumed run's metrics differ from the uninterrupted run's");
    for dir in [straight, stopped] {
        fs::remove_dir_all(dir).unwrap();
    }
}

/// The binary `bin` (`train`, `pretrain`) with `args`, output discarded (the test reads the
/// run's files).
fn spawn(bin: &str, args: &[&str]) -> Child {
    Command::new(bin).args(args).arg("--quiet").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

const TRAIN: &str = env!("CARGO_BIN_EXE_train");

fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().unwrap();
    if !status.success() {
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("{what} failed ({status}): {err}");
    }
}

/// Trains the shipped config `config` with `sets` (and `--run-name`) twice with the binary `bin`
/// (`train`, `pretrain`): once uninterrupted, once killed (SIGKILL) at 20 random moments and
/// resumed after each; the two runs' metrics, time columns aside, must be equal and have `rows`
/// rows.
fn killed_20_times_finishes_like_an_uninterrupted_run(
    bin: &str,
    tag: &str,
    config: &str,
    sets: &[String],
    rows: usize,
) {
    const KILLS: usize = 20;
    let runs = fresh_dir(tag);
    let config = config_path(config).display().to_string();
    let args = |name: &str| -> Vec<String> {
        let mut args = vec!["--config".into(), config.clone(), "--runs-dir".into(), runs.display().to_string()];
        for set in sets {
            args.extend(["--set".into(), set.clone()]);
        }
        args.extend(["--run-name".into(), name.into()]);
        args
    };
    let spawn = |args: &[String]| spawn(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());

    let start = Instant::now();
    wait_ok(spawn(&args("straight")), "the uninterrupted run");
    let whole = start.elapsed();

    // Kill moments, from a fixed seed (so a failure replays): each process (a fresh start, then
    // resumes) waits for 0 or 1 new checkpoints of its own, then lives on for a time uniform in
    // one checkpoint interval (these configs checkpoint at every row) and is killed. So the run
    // creeps forward, about a checkpoint per kill, whatever a process takes to start, and the
    // moments fall all along it: some before a process's first checkpoint (a run killed before
    // its first one starts over), some inside a checkpoint write, most in the middle of work.
    let interval = whole / rows as u32;
    let pointer = |dir: &Path| fs::read_to_string(dir.join(CHECKPOINT_POINTER)).ok();
    let mut moments = StdRng::seed_from_u64(20);
    let killed: PathBuf = runs.join("killed");
    let (first_args, resume_args) = (args("killed"), vec!["--resume".to_string(), killed.display().to_string()]);
    let mut kills = 0;
    while kills < KILLS {
        // Killed before it wrote its config, a run has nothing to resume from: start it again.
        let started = killed.join("config.toml").is_file();
        if !started {
            let _ = fs::remove_dir_all(&killed);
        }
        let before = pointer(&killed);
        let mut child = spawn(if started { &resume_args } else { &first_args });
        if moments.gen_bool(0.5) {
            while pointer(&killed) == before && child.try_wait().unwrap().is_none() {
                sleep(std::time::Duration::from_millis(2));
            }
        }
        sleep(interval.mul_f64(moments.gen_range(0.0..1.0)));
        if child.try_wait().unwrap().is_some() {
            // It finished (or failed) before the moment came: a failure is reported, and a
            // finished run has nothing left to kill.
            wait_ok(child, "a resumed run");
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    // The killed processes got somewhere: the last resume starts from a checkpoint they wrote.
    let reached = latest_checkpoint(&killed).unwrap().map(|dir| load_checkpoint_state(&dir).unwrap().global_step);
    assert!(reached.is_some(), "no checkpoint after {kills} kills: nothing was resumed");
    println!("{tag}: uninterrupted {whole:.1?}; after {kills} kills the run had reached step {}", reached.unwrap());
    wait_ok(spawn(&resume_args), "the last resume");

    let (expected, got) = (timeless_metrics(&runs.join("straight")), timeless_metrics(&killed));
    assert_eq!(expected.len(), rows);
    assert_eq!(kills, KILLS, "the run finished before it was killed {KILLS} times: lengthen it");
    assert_eq!(got, expected, "after {kills} kills, the run's metrics differ from the uninterrupted run's");
    fs::remove_dir_all(runs).unwrap();
}

/// Overrides that make every saved state matter: episodes that end within the run, per-step
/// sensor dropout (its own random stream) and a checkpoint at each chance.
fn mid_episode_sets(extra: &[&str]) -> Vec<String> {
    let mut sets: Vec<String> =
        ["env.params.max_episode_steps=40", "env.params.sensor_dropout={ mode = \"per-step\", p = 0.3 }"]
            .map(String::from)
            .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}

#[test]
fn a_ppo_run_killed_at_20_random_moments_finishes_with_the_metrics_of_an_uninterrupted_run() {
    let sets = mid_episode_sets(&["train.total_steps=2048", "train.checkpoint_every=1"]);
    killed_20_times_finishes_like_an_uninterrupted_run(TRAIN, "killed-ppo", "ppo-smoke.toml", &sets, 32);
}

// ---------------------------------------------------------------------------------------------
// Exact resume, off-policy: the checkpoint also holds the replay buffer, the target networks,
// every optimiser and the loop's generator and counters.
// ---------------------------------------------------------------------------------------------

/// The smoke config of `algo` (`sac`, `ddpg`) for the resume tests: 400 environment steps, a
/// row and a checkpoint every 8 (`every` for checkpoints), sensor dropout, 40-step episodes.
fn off_policy_sets(algo: &str, checkpoint_every: u64, pretrained: Option<&Path>) -> Vec<String> {
    let mut sets = mid_episode_sets(&[
        "train.total_steps=400",
        "train.log_every=8",
        &format!("train.checkpoint_every={checkpoint_every}"),
    ]);
    if algo == "ddpg" {
        let path = pretrained.expect("DDPG needs a pretrained encoder");
        sets.push(format!("pretrained.path={:?}", path.display().to_string()));
    }
    sets
}

/// Pretrains the smoke encoder (one epoch) into `dir`, for the DDPG runs.
fn pretrained_encoder(dir: &Path) -> PathBuf {
    let config: PretrainConfig =
        load(Some(&config_path("pretrain-smoke.toml")), &["train.epochs=1".to_string()]).unwrap();
    pretrain::<Ad>(&config, &RunDir::at(dir).unwrap(), &Default::default(), &PretrainOptions::default()).unwrap();
    dir.to_path_buf()
}

/// Trains the off-policy `config` (`TrainConfig`: the algorithm from its `algo`) in `dir`.
fn train_off_policy(config: &TrainConfig, dir: &Path, resume: bool, max_updates: Option<usize>) {
    let options = TrainOptions { resume, max_updates, ..Default::default() };
    config.train(&RunDir::at(dir).unwrap(), &DeviceArgs::default(), &options).unwrap();
}

#[test]
fn sac_and_ddpg_runs_stopped_twice_and_resumed_log_what_uninterrupted_runs_log() {
    let _rng = backend_rng();
    let encoder = pretrained_encoder(&fresh_dir("stopped-encoder"));
    for (algo, file) in [("sac", "sac-smoke.toml"), ("ddpg", "ddpg-smoke.toml")] {
        let sets = off_policy_sets(algo, 8, Some(&encoder));
        let config = TrainConfig::load(Some(&config_path(file)), &sets).unwrap();
        let straight = fresh_dir(&format!("{algo}-straight"));
        train_off_policy(&config, &straight, false, None);
        // Stops between checkpoints and rows: the tallies and counters in the loop state matter.
        let stopped = fresh_dir(&format!("{algo}-stopped"));
        for (resume, max_updates) in [(false, Some(13)), (true, Some(29)), (true, None)] {
            train_off_policy(&config, &stopped, resume, max_updates);
        }
        let (expected, got) = (timeless_metrics(&straight), timeless_metrics(&stopped));
        assert_eq!(expected.len(), 50, "{algo}");
        assert_eq!(got, expected, "{algo}: the resumed run's metrics differ from the uninterrupted run's");
        for dir in [straight, stopped] {
            fs::remove_dir_all(dir).unwrap();
        }
    }
    fs::remove_dir_all(encoder).unwrap();
}

#[test]
fn a_row_callback_that_returns_false_stops_sac_and_ddpg_at_a_checkpoint_they_resume_from_exactly() {
    let _rng = backend_rng();
    let encoder = pretrained_encoder(&fresh_dir("on-row-encoder"));
    for (algo, file) in [("sac", "sac-smoke.toml"), ("ddpg", "ddpg-smoke.toml")] {
        let config = TrainConfig::load(Some(&config_path(file)), &off_policy_sets(algo, 8, Some(&encoder))).unwrap();
        let straight = fresh_dir(&format!("{algo}-on-row-straight"));
        train_off_policy(&config, &straight, false, None);
        // Python's on_update returning False: the run stops after the 20th row, checkpointed there.
        let stopped = fresh_dir(&format!("{algo}-on-row-stopped"));
        let rows = Arc::new(AtomicUsize::new(0));
        let counter = rows.clone();
        let on_row = OnRow(Arc::new(move |_: &Row| counter.fetch_add(1, Ordering::SeqCst) + 1 < 20));
        let options = TrainOptions { on_row: Some(on_row), ..Default::default() };
        config.train(&RunDir::at(&stopped).unwrap(), &DeviceArgs::default(), &options).unwrap();
        assert_eq!(rows.load(Ordering::SeqCst), 20, "{algo}");
        assert_eq!(timeless_metrics(&stopped).len(), 20, "{algo}: rows after the refused one");
        train_off_policy(&config, &stopped, true, None);
        assert_eq!(
            timeless_metrics(&stopped),
            timeless_metrics(&straight),
            "{algo}: the resumed run's metrics differ from the uninterrupted run's"
        );
        for dir in [straight, stopped] {
            fs::remove_dir_all(dir).unwrap();
        }
    }
    fs::remove_dir_all(encoder).unwrap();
}

#[test]
fn a_sac_run_killed_at_20_random_moments_finishes_with_the_metrics_of_an_uninterrupted_run() {
    killed_20_times_finishes_like_an_uninterrupted_run(
        TRAIN,
        "killed-sac",
        "sac-smoke.toml",
        &off_policy_sets("sac", 8, None),
        50,
    );
}

#[test]
fn a_ddpg_run_killed_at_20_random_moments_finishes_with_the_metrics_of_an_uninterrupted_run() {
    let encoder = {
        let _rng = backend_rng();
        pretrained_encoder(&fresh_dir("killed-ddpg-encoder"))
    };
    killed_20_times_finishes_like_an_uninterrupted_run(
        TRAIN,
        "killed-ddpg",
        "ddpg-smoke.toml",
        &off_policy_sets("ddpg", 8, Some(&encoder)),
        50,
    );
    fs::remove_dir_all(encoder).unwrap();
}

#[test]
fn without_its_replay_buffer_a_resumed_run_refills_it_before_learning_again() {
    let _rng = backend_rng();
    let mut sets = off_policy_sets("sac", 400, None);
    sets.push("replay.checkpoint=false".into());
    let config = TrainConfig::load(Some(&config_path("sac-smoke.toml")), &sets).unwrap();
    let dir = fresh_dir("no-replay");
    train_off_policy(&config, &dir, false, Some(20));
    let checkpoint = latest_checkpoint(&dir).unwrap().unwrap();
    assert!(!checkpoint.join(REPLAY_FILE).exists(), "replay.checkpoint = false leaves the buffer out");
    let stopped_at = load_checkpoint_state(&checkpoint).unwrap().global_step;
    train_off_policy(&config, &dir, true, None);
    // The run goes on to the end, but learns again only once the buffer holds learning_starts
    // (32) transitions: no update in the rows of the first 32 steps after the stop.
    let rows = timeless_metrics(&dir);
    assert_eq!(rows.len(), 50);
    let cell = |row: &Vec<String>, key: &str| -> f64 {
        row.iter().find_map(|c| c.strip_prefix(&format!("{key}="))).unwrap().parse().unwrap()
    };
    let updates_at = |step: u64| {
        let row = rows.iter().find(|r| cell(r, "global_step") as u64 >= step).unwrap();
        cell(row, "update")
    };
    assert_eq!(updates_at(stopped_at + 8), updates_at(stopped_at + 24), "no learning while the buffer refills");
    assert!(updates_at(400) > updates_at(stopped_at + 40), "learning resumes");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_pretraining_run_killed_at_20_random_moments_finishes_with_the_metrics_of_an_uninterrupted_run() {
    // 32 short epochs (7 steps each), a checkpoint after every one.
    let sets = ["data.samples=256".to_string(), "train.epochs=32".to_string()];
    killed_20_times_finishes_like_an_uninterrupted_run(
        env!("CARGO_BIN_EXE_pretrain"),
        "killed-pretrain",
        "pretrain-smoke.toml",
        &sets,
        32,
    );
}
