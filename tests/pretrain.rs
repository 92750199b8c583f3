//! End to end through the library: the smoke config collects data, trains, logs one metrics row
//! per epoch and writes a checkpoint that loads back into an identical encoder.

use std::fs;
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;

use m3ixup::agents::envs::VecEnvConfig;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::agents::representation::pretrain::{load_encoder, pretrain, PretrainConfig, PretrainOptions, SampleSet};
use m3ixup::agents::Presence;

mod common;
use common::{backend_rng, fresh_dir};

type Ad = Autodiff<Flex>;

fn smoke_config() -> PretrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pretrain-smoke.toml");
    let config: PretrainConfig = m3ixup::config::load(Some(&path), &[]).unwrap();
    config.validate().unwrap();
    config
}

#[test]
fn smoke_config_trains_logs_and_checkpoints() {
    let _rng = backend_rng();
    let config = smoke_config();
    let dir = fresh_dir("smoke");
    let run = RunDir::at(&dir).unwrap();
    let device = Default::default();
    let (encoder, summary) = pretrain::<Ad>(&config, &run, &device, &PretrainOptions::default()).unwrap();
    let epochs = config.train.epochs;
    assert_eq!(summary.epochs.len(), epochs);
    assert_eq!(summary.modalities, ["pixels", "sound"]);

    // The saved config is the resolved one.
    let saved: PretrainConfig = toml::from_str(&fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(saved, config);

    // metrics.csv: a header and one row per epoch; metrics.jsonl: one object per epoch.
    let expected = [
        "pretrain/epoch",
        "pretrain/step",
        "losses/train_total",
        "losses/train_gmc",
        "losses/train_input",
        "losses/train_manifold",
        "losses/train_adapt",
        "losses/train_explore",
        "losses/val_total",
        "losses/val_gmc",
        "retrieval/pixels",
        "retrieval/sound",
        "time/epoch_seconds",
    ];
    let csv = fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + epochs, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for key in expected {
        assert!(header.contains(&key), "metrics.csv lacks {key}: {header:?}");
    }
    let rows: Vec<serde_json::Value> = fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), epochs);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["pretrain/epoch"], (i + 1) as i64);
        for key in expected {
            let v = row[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {row}"));
            assert!(v.is_finite(), "{key} = {v}");
        }
        for m in ["pixels", "sound"] {
            let acc = row[format!("retrieval/{m}")].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{m}: {acc}");
        }
    }
    let last = &rows[epochs - 1];
    assert_eq!(last["retrieval/pixels"].as_f64().unwrap(), summary.last_retrieval()[0]);

    // The checkpoint loads into an encoder with identical outputs.
    let (loaded, meta) = load_encoder::<Flex>(&dir, &device).unwrap();
    assert_eq!(meta.epoch, epochs);
    assert_eq!(meta.env_name, "multimodal-pendulum");
    let samples = SampleSet::collect_random(
        &config.env.name,
        &config.env.params,
        16,
        VecEnvConfig { num_envs: 4, seed: 99, ..VecEnvConfig::default() },
        None,
    )
    .unwrap();
    meta.check_space(samples.space()).unwrap();
    let indices: Vec<usize> = (0..16).collect();
    let x = samples.batch::<Flex>(&indices, &device);
    let trained = encoder.valid();
    let all = Presence::all(16, 2);
    let z_trained = trained.encode(&x, &all).into_data();
    let z_loaded = loaded.encode(&x, &all).into_data();
    assert_eq!(z_trained, z_loaded);
    let one = Presence::from_rows(&vec![vec![true, false]; 16]);
    assert_eq!(trained.encode(&x, &one).into_data(), loaded.encode(&x, &one).into_data());

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn same_seed_same_run() {
    let _rng = backend_rng();
    let mut config = smoke_config();
    config.train.epochs = 1;
    let device = Default::default();
    let dirs = [fresh_dir("seed-a"), fresh_dir("seed-b")];
    let summaries: Vec<_> = dirs
        .iter()
        .map(|dir| pretrain::<Ad>(&config, &RunDir::at(dir).unwrap(), &device, &PretrainOptions::default()).unwrap().1)
        .collect();
    assert_eq!(summaries[0].epochs[0].train_loss, summaries[1].epochs[0].train_loss);
    assert_eq!(summaries[0].epochs[0].validation, summaries[1].epochs[0].validation);
    // The weights agree (the files differ: burn gives every parameter a fresh id).
    let samples =
        SampleSet::collect_random(&config.env.name, &config.env.params, 8, VecEnvConfig::default(), None).unwrap();
    let indices: Vec<usize> = (0..8).collect();
    let x = samples.batch::<Flex>(&indices, &device);
    let z: Vec<_> = dirs
        .iter()
        .map(|dir| load_encoder::<Flex>(dir, &device).unwrap().0.encode(&x, &Presence::all(8, 2)).into_data())
        .collect();
    assert_eq!(z[0], z[1]);
    for dir in dirs {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn shipped_configs_are_valid_and_the_m3ixup_one_is_the_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |name: &str| -> PretrainConfig {
        let config: PretrainConfig = m3ixup::config::load(Some(&root.join("configs").join(name)), &[]).unwrap();
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        config
    };
    assert_eq!(load("pretrain-m3ixup.toml"), PretrainConfig::default());
    let gmc = load("pretrain-gmc.toml");
    assert_eq!(gmc.loss.kind, m3ixup::agents::representation::sections::LossKind::Gmc);
    // Same data, encoder and schedule as the M3ixup run: only the loss differs.
    let m3 = PretrainConfig::default();
    assert_eq!((&gmc.env, &gmc.data, &gmc.encoder, &gmc.train), (&m3.env, &m3.data, &m3.encoder, &m3.train));
    load("pretrain-smoke.toml");
}

#[test]
fn overrides_that_break_the_loss_are_rejected_naming_the_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pretrain-m3ixup.toml");
    let error = |set: &str| -> String {
        match m3ixup::config::load::<PretrainConfig>(Some(&path), &[set.to_string()]) {
            Err(e) => format!("{e:#}"),
            Ok(c) => c.validate().expect_err(set).to_string(),
        }
    };
    for (set, field) in [
        ("loss.kind=foo", "loss.kind"),
        ("loss.terms=[\"gmc\", \"shuffle\"]", "loss.terms"),
        ("loss.shuffle.weight=1.0", "shuffle"),
        ("loss.input.weight=-1", "loss.input.weight"),
        ("loss.alpha=0", "loss.alpha"),
        ("loss.explore.alpha=-0.5", "loss.explore.alpha"),
    ] {
        let e = error(set);
        assert!(e.contains(field), "--set {set}: {e}");
    }
}
