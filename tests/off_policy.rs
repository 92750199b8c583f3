//! End to end through the library and the binaries: SAC with the M3ixup loss and DDPG on a
//! frozen pretrained encoder train from their smoke configs, are deterministic, checkpoint, and
//! evaluate under sensor failures; the frozen encoder stays frozen; `train` and `evaluate` pick
//! the algorithm from the config and the checkpoint.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;

use m3ixup::agents::algorithms::ddpg::{self, DdpgConfig};
use m3ixup::agents::algorithms::sac::{self, SacConfig};
use m3ixup::agents::evaluate::{evaluate, EvalConfig, Policy};
use m3ixup::agents::infra::checkpoint::{latest_checkpoint, record_bytes};
use m3ixup::agents::infra::harness::TrainOptions;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::agents::representation::pretrain::{load_encoder, pretrain, PretrainConfig, PretrainOptions};
use m3ixup::config::load;

mod common;
use common::{backend_rng, config_path, fresh_dir, timeless};

type Ad = Autodiff<Flex>;

fn tiny_protocol() -> EvalConfig {
    EvalConfig {
        episodes: 2,
        steps: 10,
        num_envs: 2,
        workers: 0,
        dropout_p: vec![],
        noise_sigma: vec![],
        frozen: false,
        ..EvalConfig::default()
    }
}

/// Pretrains the smoke encoder into `dir` (a few seconds).
fn pretrained(dir: &Path) -> PathBuf {
    let config: PretrainConfig =
        load(Some(&config_path("pretrain-smoke.toml")), &["train.epochs=1".to_string()]).unwrap();
    pretrain::<Ad>(&config, &RunDir::at(dir).unwrap(), &Default::default(), &PretrainOptions::default()).unwrap();
    dir.to_path_buf()
}

#[test]
fn sac_smoke_trains_deterministically_checkpoints_and_evaluates() {
    let _rng = backend_rng();
    let config: SacConfig = load(Some(&config_path("sac-smoke.toml")), &[]).unwrap();
    config.validate().unwrap();
    let device = Default::default();
    let dir = fresh_dir("sac");
    let a = sac::train::<Ad>(&config, &RunDir::at(&dir).unwrap(), &device, &TrainOptions::default()).unwrap();
    assert_eq!(a.global_step, 64);
    // 32 warm-up steps, then 0.25 updates per step.
    assert_eq!(a.updates, 8);
    let last = a.rows.last().unwrap();
    for key in ["losses/critic", "losses/aux", "losses/actor", "charts/alpha"] {
        let v = last.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} missing")).1;
        assert!(v.is_finite(), "{key} = {v}");
    }
    let b = sac::train::<Ad>(&config, &RunDir::at(fresh_dir("sac-again")).unwrap(), &device, &TrainOptions::default())
        .unwrap();
    assert_eq!(timeless(&a.rows), timeless(&b.rows), "same seed, same run");

    let checkpoint = latest_checkpoint(&dir).unwrap().unwrap();
    let (agent, state, _) = sac::load_agent::<Flex>(&checkpoint, &device).unwrap();
    assert_eq!((state.algo.as_str(), state.global_step), ("sac", 64));
    let agents = [("sac".to_string(), &agent as &dyn Policy<Flex>, state.observation_space.clone())];
    let report =
        evaluate::<Flex>(&agents, &state.env_name, &config.env.params, &tiny_protocol(), &device, None).unwrap();
    let labels: Vec<&str> = report.rows.iter().map(|r| r.condition.as_str()).collect();
    assert_eq!(labels, ["all", "pixels only", "sound only"]);
}

#[test]
fn ddpg_trains_on_the_pretrained_encoder_without_changing_it() {
    let _rng = backend_rng();
    let device = Default::default();
    let encoder_dir = pretrained(&fresh_dir("pretrained"));
    let set = format!("pretrained.path={:?}", encoder_dir.display().to_string());
    let config: DdpgConfig = load(Some(&config_path("ddpg-smoke.toml")), &[set]).unwrap();
    config.validate().unwrap();
    let dir = fresh_dir("ddpg");
    let summary = ddpg::train::<Ad>(&config, &RunDir::at(&dir).unwrap(), &device, &TrainOptions::default()).unwrap();
    // Updates follow every vector step from the one that reaches the 32-step warm-up: 17 x 2.
    assert_eq!((summary.global_step, summary.updates), (64, 34));

    // The checkpoint's encoder is the pretrained one, parameter for parameter.
    let checkpoint = latest_checkpoint(&dir).unwrap().unwrap();
    let (agent, state, _) = ddpg::load_agent::<Flex>(&checkpoint, &device).unwrap();
    let (original, _) = load_encoder::<Flex>(&encoder_dir, &device).unwrap();
    let bytes =
        |e: &m3ixup::agents::M3ixupEncoder<Flex>| record_bytes(e.clone().into_record(), Path::new("-")).unwrap();
    assert_eq!(bytes(&agent.encoder), bytes(&original), "the frozen encoder changed");
    // The heads did learn: their weights moved from a fresh initialisation of the same seed.
    let critic = summary.rows.last().unwrap().iter().find(|(k, _)| k == "losses/critic").unwrap().1;
    assert!(critic.is_finite());

    let agents = [("ddpg".to_string(), &agent as &dyn Policy<Flex>, state.observation_space.clone())];
    let report =
        evaluate::<Flex>(&agents, &state.env_name, &config.env.params, &tiny_protocol(), &device, None).unwrap();
    assert_eq!(report.rows.len(), 3);
}

#[test]
fn a_pretrained_encoder_of_another_observation_space_is_rejected_naming_both() {
    let _rng = backend_rng();
    let encoder_dir = pretrained(&fresh_dir("pretrained-other"));
    // The encoder saw pixels and sound; this environment adds proprioception.
    let overrides =
        vec![format!("pretrained.path={:?}", encoder_dir.display().to_string()), "env.params.proprio=true".into()];
    let config: DdpgConfig = load(Some(&config_path("ddpg-smoke.toml")), &overrides).unwrap();
    let err = ddpg::train::<Ad>(
        &config,
        &RunDir::at(fresh_dir("ddpg-other")).unwrap(),
        &Default::default(),
        &TrainOptions::default(),
    )
    .unwrap_err();
    let e = err.to_string();
    assert!(e.contains("pretrained.path") && e.contains("trained on") && e.contains("proprio"), "{e}");
}

#[test]
fn every_shipped_off_policy_config_loads_and_validates() {
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("sac-") {
            let config: SacConfig = load(Some(&path), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("ddpg-") {
            let config: DdpgConfig = load(Some(&path), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // Bad values name the field.
    for (file, set, field) in [
        ("sac-smoke.toml", "sac.updates_per_step=0", "sac.updates_per_step"),
        ("sac-smoke.toml", "sac.critic_tau=1.5", "sac.critic_tau"),
        ("sac-smoke.toml", "replay.capacity=8", "replay.capacity"),
        ("sac-smoke.toml", "sac.aux_every=0", "sac.aux_every"),
        ("ddpg-smoke.toml", "ddpg.batch_size=0", "ddpg.batch_size"),
        ("sac-smoke.toml", "env.name=\"pixel-cartpole\"", "env.name"),
        ("ddpg-smoke.toml", "ddpg.tau=0", "ddpg.tau"),
        ("ddpg-smoke.toml", "pretrained.path=\"\"", "pretrained.path"),
    ] {
        let e = if file.starts_with("sac") {
            load::<SacConfig>(Some(&config_path(file)), &[set.to_string()]).unwrap().validate().unwrap_err().to_string()
        } else {
            load::<DdpgConfig>(Some(&config_path(file)), &[set.to_string()])
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert!(e.contains(field), "{set}: {e}");
    }
}

#[test]
fn train_picks_the_algorithm_from_the_config_and_evaluate_from_the_checkpoint() {
    let dir = fresh_dir("binaries");
    let train = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_train")).args(args).output().unwrap();
    let runs = dir.display().to_string();
    let sac_config = config_path("sac-smoke.toml").display().to_string();
    let out = train(&["--config", &sac_config, "--runs-dir", &runs, "--run-name", "sac", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(fs::read_to_string(dir.join("sac/config.toml")).unwrap().contains("algo = \"sac\""));

    // An unknown algorithm names the key and the choices; `--resume` finds the algorithm in the
    // run's config (a finished run has nothing left to do, and logs nothing more).
    let out = train(&["--config", &sac_config, "--set", "algo=\"a2c\"", "--runs-dir", &runs]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("algo") && err.contains("ddpg-frozen"), "{err}");
    let metrics = fs::read_to_string(dir.join("sac/metrics.csv")).unwrap();
    let out = train(&["--resume", &dir.join("sac").display().to_string(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(dir.join("sac/metrics.csv")).unwrap(), metrics);

    let out = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(["--checkpoint", &dir.join("sac").display().to_string(), "--episodes", "2", "--steps", "5"])
        .args(["--p", "--noise", "--no-frozen", "--quiet", "--out", &dir.join("eval").display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("eval/eval.csv").is_file());
}
