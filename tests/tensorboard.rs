//! TensorBoard event files of a training run: the same scalars as `metrics.csv`, once each after
//! a resume that drops rows, and none when `train.tensorboard` is off. (That TensorBoard's own
//! reader parses them is python/tests/test_tensorboard.py's part.)

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use burn::backend::{Autodiff, Flex};

use m3ixup::agents::algorithms::ppo::{latest_checkpoint, train, PpoConfig};
use m3ixup::agents::infra::checkpoint::{CHECKPOINTS_DIR, CHECKPOINT_POINTER};
use m3ixup::agents::infra::harness::{TrainOptions, TrainSummary};
use m3ixup::agents::infra::run::{tensorboard_files, tensorboard_scalars, RunDir};

mod common;
use common::{backend_rng, fresh_dir, ppo_smoke};

type Ad = Autodiff<Flex>;

fn run(config: &PpoConfig, dir: &Path, resume: bool, max_updates: Option<usize>) -> TrainSummary {
    let options = TrainOptions { resume, max_updates, ..Default::default() };
    train::<Ad>(config, &RunDir::at(dir).unwrap(), &Default::default(), &options).unwrap()
}

/// Each column of `metrics.csv` but `global_step`, as `(step, value)` points of its non-empty
/// cells, values rounded to f32 as TensorBoard keeps them (bits, so that NaN equals NaN).
fn csv_points(dir: &Path) -> BTreeMap<String, Vec<(i64, u32)>> {
    let mut reader = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let step_column = header.iter().position(|k| k == "global_step").unwrap();
    let mut points: BTreeMap<String, Vec<(i64, u32)>> = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        let step: i64 = record[step_column].parse().unwrap();
        for (key, cell) in header.iter().zip(record.iter()) {
            if key != "global_step" && !cell.is_empty() {
                let value: f64 = cell.parse().unwrap();
                points.entry(key.clone()).or_default().push((step, (value as f32).to_bits()));
            }
        }
    }
    points
}

/// The event files' points by tag.
fn event_points(dir: &Path) -> BTreeMap<String, Vec<(i64, u32)>> {
    let mut points: BTreeMap<String, Vec<(i64, u32)>> = BTreeMap::new();
    for (step, tag, value) in tensorboard_scalars(dir).unwrap() {
        points.entry(tag).or_default().push((step, value.to_bits()));
    }
    points
}

#[test]
fn event_files_hold_the_csv_and_a_resume_that_drops_rows_leaves_each_point_once() {
    let _rng = backend_rng();
    // 4 updates of 64 steps; a checkpoint every 2 updates (and after each process's last).
    let config = ppo_smoke(&["train.total_steps=256", "train.checkpoint_every=2"]);
    let dir = fresh_dir("resume");
    run(&config, &dir, false, Some(2));
    let at_two = latest_checkpoint(&dir).unwrap().unwrap();
    let kept = dir.join("kept-update-2");
    fs::create_dir_all(&kept).unwrap();
    for entry in fs::read_dir(&at_two).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), kept.join(entry.file_name())).unwrap();
    }
    run(&config, &dir, true, Some(1));
    // A crash after update 3 was logged but before its checkpoint: the pointer still names
    // update 2, so the next resume drops row 3 and logs it again.
    let name = at_two.file_name().unwrap().to_str().unwrap();
    fs::rename(&kept, &at_two).unwrap();
    fs::write(dir.join(CHECKPOINT_POINTER), format!("dir = \"{CHECKPOINTS_DIR}/{name}\"\n")).unwrap();
    let summary = run(&config, &dir, true, None);
    assert_eq!(summary.global_step, 256);

    let csv = csv_points(&dir);
    assert_eq!(csv["losses/policy"].iter().map(|p| p.0).collect::<Vec<_>>(), [64, 128, 192, 256]);
    assert_eq!(event_points(&dir), csv, "every CSV cell once, at its global_step, and nothing else");
    assert_eq!(tensorboard_files(&dir).unwrap().len(), 3, "one event file per process");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_switch_turns_event_files_off() {
    let _rng = backend_rng();
    let dir = fresh_dir("off");
    run(&ppo_smoke(&["train.tensorboard=false"]), &dir, false, None);
    assert!(dir.join("metrics.csv").is_file());
    assert!(tensorboard_files(&dir).unwrap().is_empty());
    fs::remove_dir_all(dir).unwrap();
}
