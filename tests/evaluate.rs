//! The evaluation path: each condition masks or corrupts exactly what it says, identical seeds
//! give identical tables, retention follows its definition, and bad inputs fail before any
//! episode runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};

use m3ixup::agents::envs::{make, Action, Env, ModalityData};
use m3ixup::agents::evaluate::{evaluate, retention_ratio, Condition, EvalConfig, EvalError, Policy};
use m3ixup::agents::ppo::{latest_checkpoint, load_agent, train, PpoConfig, TrainOptions};
use m3ixup::agents::run::RunDir;
use m3ixup::config::load;

static BACKEND_RNG: Mutex<()> = Mutex::new(());

fn pendulum(condition: &Condition) -> Box<dyn Env> {
    condition.wrap(make("multimodal-pendulum", &toml::Table::new()).unwrap()).unwrap()
}

/// Observations of 20 steps after a seeded reset, with zero torque.
fn trajectory(condition: &Condition) -> Vec<m3ixup::agents::envs::Obs> {
    let mut env = pendulum(condition);
    let mut out = vec![env.reset(Some(3)).unwrap().0];
    for _ in 0..20 {
        out.push(env.step(&Action::Continuous(vec![0.0])).unwrap().obs);
    }
    out
}

fn f32s(d: &ModalityData) -> Vec<f32> {
    match d {
        ModalityData::F32(v) => v.clone(),
        ModalityData::U8(v) => v.iter().map(|&b| b as f32).collect(),
    }
}

#[test]
fn each_condition_masks_or_corrupts_exactly_what_it_says() {
    // Space order: pixels (0), sound (1).
    let clean = trajectory(&Condition::All);
    assert!(clean.iter().all(|o| o.present == [true, true]));

    let only = trajectory(&Condition::Only { modality: "pixels".into() });
    for (o, c) in only.iter().zip(&clean) {
        assert_eq!(o.present, [true, false]);
        assert_eq!(o.data[0], c.data[0], "the kept sensor is untouched");
        assert!(f32s(&o.data[1]).iter().all(|&x| x == 0.0), "a removed sensor is cleared");
    }

    let always = trajectory(&Condition::PerStep { modality: "sound".into(), p: 1.0 });
    assert!(always.iter().all(|o| o.present == [true, false]));
    let never = trajectory(&Condition::PerStep { modality: "sound".into(), p: 0.0 });
    assert_eq!(never, clean);
    let half = trajectory(&Condition::PerStep { modality: "pixels".into(), p: 0.5 });
    assert!(half.iter().all(|o| o.present[1]), "only the named sensor drops");
    let dropped = half.iter().filter(|o| !o.present[0]).count();
    assert!(dropped > 2 && dropped < 19, "{dropped} of 21 dropped at p = 0.5");

    let noisy = trajectory(&Condition::Noise { modality: "sound".into(), sigma: 0.1 });
    let space = pendulum(&Condition::All).observation_space().clone();
    let sound = space.spec(1);
    for (o, c) in noisy.iter().zip(&clean) {
        assert_eq!(o.present, [true, true], "a noisy sensor is still marked present");
        assert_eq!(o.data[0], c.data[0]);
        assert_ne!(o.data[1], c.data[1]);
        for (k, x) in f32s(&o.data[1]).into_iter().enumerate() {
            assert!(x >= sound.low[k] && x <= sound.high[k], "noise stays within the bounds");
        }
    }

    // Binary pixels (0 or 1) change too: noise below half a level is not rounded away.
    let noisy_pixels = trajectory(&Condition::Noise { modality: "pixels".into(), sigma: 0.1 });
    for (o, c) in noisy_pixels.iter().zip(&clean) {
        assert_ne!(o.data[0], c.data[0], "pixel noise changes every frame");
        assert_eq!(o.data[1], c.data[1]);
    }

    let frozen = trajectory(&Condition::Frozen { modality: "pixels".into() });
    for (o, c) in frozen.iter().zip(&clean) {
        assert_eq!(o.present, [true, true]);
        assert_eq!(o.data[0], clean[0].data[0], "the frozen camera shows the first frame");
        assert_eq!(o.data[1], c.data[1]);
    }
    assert_ne!(clean[20].data[0], clean[0].data[0], "the pendulum did move");
}

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("evaluate-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Trains the smoke config (about a second) and returns its run directory.
fn smoke_checkpoint(tag: &str, overrides: &[&str]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ppo-smoke.toml");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config: PpoConfig = load(Some(&path), &overrides).unwrap();
    let dir = fresh_dir(tag);
    train::<Autodiff<Flex>>(&config, &RunDir::at(&dir).unwrap(), &Default::default(), &TrainOptions::default())
        .unwrap();
    dir
}

fn small_protocol() -> EvalConfig {
    EvalConfig {
        episodes: 6,
        steps: 30,
        num_envs: 4,
        dropout_p: vec![0.5],
        noise_sigma: vec![0.2],
        ..EvalConfig::default()
    }
}

#[test]
fn a_smoke_checkpoint_evaluates_end_to_end_and_identical_seeds_give_identical_tables() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = smoke_checkpoint("smoke", &[]);
    let (agent, state, config) =
        load_agent::<Flex>(&latest_checkpoint(&dir).unwrap().unwrap(), &Default::default()).unwrap();
    let agents = [("smoke".to_string(), &agent as &dyn Policy<Flex>, state.observation_space.clone())];
    let protocol = small_protocol();
    let run = || {
        evaluate::<Flex>(&agents, &state.env_name, &config.env.params, &protocol, &Default::default(), None).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.random_per_step_mean, b.random_per_step_mean);
    assert_eq!(a.rows.len(), protocol.conditions(&state.observation_space).len());
    let full = a.rows.iter().find(|r| r.condition == "all").unwrap().per_step_mean;
    for r in &a.rows {
        assert_eq!(r.retention, retention_ratio(r.per_step_mean, full, a.random_per_step_mean), "{}", r.condition);
        assert!(r.per_step_mean <= 0.0 && r.per_step_mean >= -16.3, "{}: {}", r.condition, r.per_step_mean);
        assert!((r.return_mean / 30.0 - r.per_step_mean).abs() < 1e-9, "30-step episodes");
    }
    let table = a.to_markdown();
    assert!(table.contains("| pixels only |") && table.contains("| sound frozen |"), "{table}");
    // Another seed, other episodes.
    let other = EvalConfig { seed: 5, ..protocol.clone() };
    let c = evaluate::<Flex>(&agents, &state.env_name, &config.env.params, &other, &Default::default(), None).unwrap();
    assert_ne!(c.rows[0].per_step_mean, a.rows[0].per_step_mean);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn incompatible_agents_unknown_modalities_and_bad_probabilities_fail_before_any_episode() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    // An agent trained with proprio as a third sensor does not fit the pixels + sound pendulum.
    let dir = smoke_checkpoint("proprio", &["env.params.proprio=true", "train.total_steps=64"]);
    let (agent, state, _) =
        load_agent::<Flex>(&latest_checkpoint(&dir).unwrap().unwrap(), &Default::default()).unwrap();
    let agents = [("proprio".to_string(), &agent as &dyn Policy<Flex>, state.observation_space.clone())];
    let err = evaluate::<Flex>(
        &agents,
        "multimodal-pendulum",
        &toml::Table::new(),
        &small_protocol(),
        &Default::default(),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("proprio"), "{err}");

    let bad_p = EvalConfig { dropout_p: vec![1.5], ..small_protocol() };
    let err = evaluate::<Flex>(&agents, "multimodal-pendulum", &toml::Table::new(), &bad_p, &Default::default(), None)
        .unwrap_err();
    assert!(err.to_string().contains("1.5"), "{err}");

    let space = state.observation_space.clone();
    let err = Condition::Only { modality: "lidar".into() }.validate(&space).unwrap_err();
    assert!(err.to_string().contains("lidar") && err.to_string().contains("pixels"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}
