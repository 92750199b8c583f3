//! Feature `python`: the PPO smoke config trains on a Python Gymnasium environment,
//! `gym:Pendulum-v1` with pixels from its renderer plus its state, unchanged otherwise, and the
//! agent is evaluated with the pixels dropped.
//! Needs a Python with gymnasium and pygame (VIRTUAL_ENV or python3 on PATH; README, Python).
//!
//!     cargo test --features python --test gym_train
#![cfg(feature = "python")]

use std::path::Path;

use burn::backend::{Autodiff, Flex};

use m3ixup::agents::algorithms::ppo::{latest_checkpoint, load_agent, train, PpoConfig};
use m3ixup::agents::envs::make;
use m3ixup::agents::evaluate::{evaluate, EvalConfig, Policy};
use m3ixup::agents::infra::harness::TrainOptions;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::config::load;

type Ad = Autodiff<Flex>;

const GYM_PENDULUM: [&str; 5] = [
    "env.name=\"gym:Pendulum-v1\"",
    "env.params.pixels=true",
    "env.params.grayscale=true",
    "env.params.image_size=60",
    "env.params.frame_stack=2",
];

fn smoke(overrides: &[&str]) -> PpoConfig {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join("ppo-smoke.toml");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load(Some(&config_path), &overrides).unwrap()
}

#[test]
fn ppo_configs_accept_gym_ids() {
    let config = smoke(&["env.name=\"gym:Pendulum-v1\"", "env.params.pixels=true"]);
    config.validate().unwrap();
}

#[test]
fn smoke_ppo_trains_on_gym_pendulum_and_is_evaluated_with_the_pixels_dropped() {
    let config = smoke(&GYM_PENDULUM);
    config.validate().unwrap();

    let env = make(&config.env.name, &config.env.params).unwrap();
    let names: Vec<&str> = env.observation_space().names().collect();
    assert_eq!(names, ["pixels", "proprio"]);
    assert_eq!(env.observation_space().spec(0).shape, vec![2, 60, 60]);

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gym-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::at(&dir).unwrap();
    let summary = train::<Ad>(&config, &run, &Default::default(), &TrainOptions::default()).unwrap();
    assert_eq!(summary.global_step, 128);
    assert!(summary.last_reward_per_step.is_finite() && summary.last_reward_per_step <= 0.0);

    // Evaluation without learning: every sensor, then each alone ("proprio only" = the pixels
    // dropped, masked as missing), against the random policy.
    let checkpoint = latest_checkpoint(&dir).unwrap().expect("a checkpoint");
    let (agent, _, trained) = load_agent::<Flex>(&checkpoint, &Default::default()).unwrap();
    let space = env.observation_space().clone();
    let protocol = EvalConfig {
        episodes: 2,
        steps: 20,
        num_envs: 2,
        workers: 0,
        dropout_p: vec![],
        noise_sigma: vec![],
        frozen: false,
        ..EvalConfig::default()
    };
    let report = evaluate::<Flex>(
        &[("ppo".to_string(), &agent as &dyn Policy<Flex>, space)],
        &trained.env.name,
        &trained.env.params,
        &protocol,
        &Default::default(),
        None,
    )
    .unwrap();
    let labels: Vec<&str> = report.rows.iter().map(|r| r.condition.as_str()).collect();
    assert_eq!(labels, ["all", "pixels only", "proprio only"]);
    let dropped = &report.rows[2];
    assert!(dropped.per_step_mean.is_finite() && dropped.per_step_mean <= 0.0, "{dropped:?}");
}
