//! End to end through the library: the PPO smoke config trains, is deterministic with inline
//! workers, resumes from its checkpoint, rejects bad configs before training, and stops on a
//! non-finite loss with its last checkpoint intact.

use std::fs;
use std::path::Path;

use burn::backend::{Autodiff, Flex};

use m3ixup::agents::algorithms::ppo::{latest_checkpoint, load_agent, train, PpoConfig, PpoError};
use m3ixup::agents::envs::{register, Action, ActionSpace, Env, EnvError, Info, Obs, ObsSpace, Step};
use m3ixup::agents::infra::harness::TrainOptions;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::config::load;

mod common;
use common::{backend_rng, config_path, fresh_dir, ppo_smoke, timeless};

type Ad = Autodiff<Flex>;

#[test]
fn smoke_config_trains_end_to_end_with_metrics_and_a_loadable_checkpoint() {
    let _rng = backend_rng();
    let config = ppo_smoke(&[]);
    let dir = fresh_dir("smoke");
    let run = RunDir::at(&dir).unwrap();
    let summary = train::<Ad>(&config, &run, &Default::default(), &TrainOptions::default()).unwrap();
    assert_eq!((summary.updates, summary.global_step), (2, 128));
    let row = &summary.rows[1];
    for key in [
        "global_step",
        "charts/episodic_return",
        "charts/reward_per_step",
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "losses/aux",
        "losses/m3ixup_gmc",
        "losses/m3ixup_explore",
        "m3ixup/lambda",
        "losses/approx_kl",
        "losses/clip_fraction",
        "time/sps",
    ] {
        assert!(row.iter().any(|(k, _)| k == key), "missing metric {key}");
    }
    let csv = fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and one row per update");
    assert!(fs::read_to_string(dir.join("config.toml")).unwrap().contains("multimodal-pendulum"));
    let ckpt = latest_checkpoint(&dir).unwrap().expect("a checkpoint");
    let (agent, state, loaded_config) = load_agent::<Flex>(&ckpt, &Default::default()).unwrap();
    assert_eq!((state.update, state.global_step), (2, 128));
    assert_eq!(loaded_config, config);
    assert_eq!(agent.encoder.modality_names(), ["pixels", "sound"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_same_seed_with_inline_workers_gives_identical_metrics() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=64"]);
    let mut results = Vec::new();
    for tag in ["det-a", "det-b"] {
        let dir = fresh_dir(tag);
        let summary =
            train::<Ad>(&config, &RunDir::at(&dir).unwrap(), &Default::default(), &TrainOptions::default()).unwrap();
        results.push(timeless(&summary.rows));
        fs::remove_dir_all(dir).unwrap();
    }
    assert_eq!(results[0], results[1]);
    // A different seed gives a different run.
    let dir = fresh_dir("det-c");
    let other = ppo_smoke(&["train.total_steps=64", "train.seed=8"]);
    let summary =
        train::<Ad>(&other, &RunDir::at(&dir).unwrap(), &Default::default(), &TrainOptions::default()).unwrap();
    assert_ne!(timeless(&summary.rows), results[0]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rollout_inference_on_a_cpu_copy_of_the_weights_gives_the_same_run_as_on_the_learner() {
    let _rng = backend_rng();
    let mut results = Vec::new();
    for inference in ["learner", "cpu"] {
        let config = ppo_smoke(&["train.total_steps=128", &format!("rollout.inference={inference}")]);
        let dir = fresh_dir(&format!("inference-{inference}"));
        let summary =
            train::<Ad>(&config, &RunDir::at(&dir).unwrap(), &Default::default(), &TrainOptions::default()).unwrap();
        assert_eq!(summary.updates, 2, "the copy is refreshed after the first update");
        results.push(timeless(&summary.rows));
        fs::remove_dir_all(dir).unwrap();
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn an_interrupted_run_resumes_from_its_checkpoint_with_the_same_step_counter_and_config() {
    let _rng = backend_rng();
    let config = ppo_smoke(&["train.total_steps=192"]); // 3 updates
    let dir = fresh_dir("resume");
    let run = RunDir::at(&dir).unwrap();
    let first =
        train::<Ad>(&config, &run, &Default::default(), &TrainOptions { max_updates: Some(1), ..Default::default() })
            .unwrap();
    assert_eq!((first.updates, first.global_step), (1, 64));
    // The run's own config.toml is what a resume reads.
    let saved: PpoConfig = load(Some(&dir.join("config.toml")), &[]).unwrap();
    assert_eq!(saved, config);
    let resumed =
        train::<Ad>(&saved, &run, &Default::default(), &TrainOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!((resumed.updates, resumed.global_step), (3, 192));
    let steps: Vec<f64> = resumed.rows.iter().map(|r| r[0].1).collect();
    assert_eq!(steps, vec![128.0, 192.0], "the resumed process logs updates 2 and 3");
    let csv = fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let logged: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(logged, ["64", "128", "192"]);
    // A resume with another config is refused.
    let other = ppo_smoke(&["train.total_steps=192", "ppo.learning_rate=0.01"]);
    let err = train::<Ad>(&other, &run, &Default::default(), &TrainOptions { resume: true, ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("config differs"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_configs_fail_before_training_naming_the_field() {
    let cases: [(&[&str], &str); 6] = [
        (&["ppo.learning_rat=0.1"], "learning_rat"),
        (&["rollout.inference=\"gpu\""], "inference"),
        (&["ppo.learning_rate=\"fast\""], "learning_rate"),
        (&["ppo.learning_rate=-0.1"], "ppo.learning_rate"),
        (&["ppo.minibatch_size=65"], "ppo.minibatch_size"),
        (&["env.name=\"no-such-env\""], "env.name"),
    ];
    for (overrides, field) in cases {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let err = match load::<PpoConfig>(Some(&config_path("ppo-smoke.toml")), &overrides) {
            Err(e) => format!("{e:#}"),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(err.contains(field), "{overrides:?}: {err}");
    }
    let err = load::<PpoConfig>(
        Some(&config_path("ppo-smoke.toml")),
        &["aux.kind=\"gmc\"".into(), "aux.terms=[\"input\"]".into()],
    )
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("aux.terms"), "{err}");
}

#[test]
fn every_shipped_config_loads_and_validates() {
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("ppo-") {
            let config: PpoConfig = load(Some(&path), &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// The multimodal pendulum, except that its reward turns NaN after `after` steps.
struct NanPendulum {
    inner: Box<dyn Env>,
    steps: u32,
    after: u32,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct NanConfig {
    after: u32,
}

impl Env for NanPendulum {
    fn name(&self) -> &str {
        "nan-pendulum"
    }
    fn observation_space(&self) -> &ObsSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        self.inner.reset(seed)
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        self.steps += 1;
        if self.steps > self.after {
            step.reward = f64::NAN;
        }
        Ok(step)
    }
}

#[test]
fn a_nan_loss_stops_the_run_with_a_clear_error_and_the_last_checkpoint_intact() {
    let _rng = backend_rng();
    register("nan-pendulum", Default::default(), |c: NanConfig| {
        let inner = m3ixup::agents::envs::make("multimodal-pendulum", &toml::Table::new())?;
        Ok(NanPendulum { inner, steps: 0, after: c.after })
    });
    // 16 steps per update: the rewards turn NaN during the second update.
    let config = ppo_smoke(&["env.name=\"nan-pendulum\"", "env.params.after=20", "train.total_steps=192"]);
    let dir = fresh_dir("nan");
    let run = RunDir::at(&dir).unwrap();
    let err = train::<Ad>(&config, &run, &Default::default(), &TrainOptions::default()).unwrap_err();
    assert!(matches!(err, PpoError::Diverged { update: 2, last_checkpoint: 1, .. }), "{err}");
    assert!(err.to_string().contains("not finite"), "{err}");
    let ckpt = latest_checkpoint(&dir).unwrap().expect("the first update's checkpoint");
    let (_, state, _) = load_agent::<Flex>(&ckpt, &Default::default()).unwrap();
    assert_eq!(state.update, 1);
    fs::remove_dir_all(dir).unwrap();
}

/// Every parameter value of a trained agent, in the module's order.
fn parameter_values(agent: &m3ixup::agents::algorithms::actor_critic::ActorCritic<Flex>) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor<Flex> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut values = Values(Vec::new());
    agent.visit(&mut values);
    values.0
}

#[test]
fn learner_threads_split_each_minibatch_and_give_the_one_thread_update_up_to_float_order() {
    let _rng = backend_rng();
    let dropout = "env.params.sensor_dropout={mode=\"per-step\",p=0.3}";
    for (name, overrides) in [
        ("aux-rows", vec!["ppo.aux_rows=16"]), // the auxiliary loss's rows in the first shard
        ("dropout", vec![dropout, "ppo.aux_rows=12"]), // its complete rows only, wherever they are
        ("aux-off", vec!["aux.kind=\"none\""]), // every shard alike
    ] {
        let mut overrides = overrides;
        overrides.push("train.total_steps=64"); // one update: 2 epochs x 2 minibatches of 32
        let config = ppo_smoke(&overrides);
        let mut runs = Vec::new();
        for threads in [1, 2, 3, 2] {
            let dir = fresh_dir(&format!("threads-{name}-{threads}-{}", runs.len()));
            let options = TrainOptions { learner_threads: threads, ..TrainOptions::default() };
            let summary = train::<Ad>(&config, &RunDir::at(&dir).unwrap(), &Default::default(), &options).unwrap();
            let ckpt = latest_checkpoint(&dir).unwrap().unwrap();
            let (agent, _, _) = load_agent::<Flex>(&ckpt, &Default::default()).unwrap();
            runs.push((timeless(&summary.rows), summary.rows, parameter_values(&agent)));
            fs::remove_dir_all(dir).unwrap();
        }
        let (_, one_rows, one) = &runs[0];
        for (k, threads) in [(1, 2), (2, 3)] {
            let (_, rows, params) = &runs[k];
            let moved = one.iter().zip(params).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(moved < 1e-5, "{name}, {threads} threads: a parameter moved {moved} from the 1-thread update");
            assert!(moved > 0.0, "{name}, {threads} threads: no shards (the same bits as one thread)");
            for key in ["losses/policy", "losses/value", "losses/entropy", "losses/aux", "losses/approx_kl"] {
                let value = |rows: &[Vec<(String, f64)>]| rows[0].iter().find(|(k, _)| k == key).unwrap().1;
                let (a, b) = (value(one_rows), value(rows));
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{name}, {threads} threads, {key}: {a} vs {b}");
            }
        }
        assert_eq!(runs[1].0, runs[3].0, "{name}: the same thread count gives the same run");
        assert_eq!(runs[1].2, runs[3].2);
    }
}
