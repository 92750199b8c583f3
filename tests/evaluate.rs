//! The evaluation path: each condition masks or corrupts exactly what it says, identical seeds
//! give identical tables, retention and the fraction against a reference (specialists) follow
//! their definitions, and bad inputs fail before any episode runs, through the library and
//! through the `evaluate` command line.

use std::fs;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};

use m3ixup::agents::algorithms::ppo::{latest_checkpoint, load_agent, train, PpoConfig, PpoSection};
use m3ixup::agents::envs::registry::EnvDefaults;
use m3ixup::agents::envs::{
    make, register, Action, ActionSpace, BatchActions, BatchObs, DType, Env, EnvError, Info, ModalityData,
    ModalitySpec, Obs, ObsSpace, Step,
};
use m3ixup::agents::evaluate::{
    evaluate, evaluate_with_references, reference_fraction, retention_ratio, Condition, EvalConfig, EvalError,
    EvalReport, LabelledPolicy, Policy, ReferenceKind, References, Score,
};
use m3ixup::agents::infra::harness::TrainOptions;
use m3ixup::agents::infra::run::RunDir;
use m3ixup::config::load;

mod common;
use common::{backend_rng, fresh_dir};

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
    let _rng = backend_rng();
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
    assert_eq!(a.random_return_mean, b.random_return_mean);
    assert_eq!(a.rows.len(), protocol.conditions(&state.observation_space).len());
    // The default score is the return; on these fixed-length (30-step) episodes, the per-step
    // score is the return / 30 and gives the same retentions.
    assert_eq!(protocol.score, Score::Return);
    let full = a.rows.iter().find(|r| r.condition == "all").unwrap();
    for r in &a.rows {
        assert_eq!(
            r.retention,
            retention_ratio(r.return_mean, full.return_mean, a.random_return_mean),
            "{}",
            r.condition
        );
        let per_step = retention_ratio(r.per_step_mean, full.per_step_mean, a.random_per_step_mean);
        assert!((r.retention - per_step).abs() < 1e-9, "{}: {} vs {per_step}", r.condition, r.retention);
        assert!(r.per_step_mean <= 0.0 && r.per_step_mean >= -16.3, "{}: {}", r.condition, r.per_step_mean);
        assert!((r.return_mean / 30.0 - r.per_step_mean).abs() < 1e-9, "30-step episodes");
        assert_eq!(r.length_mean, 30.0);
    }
    assert!(a.notes().is_empty(), "bounded modalities, full-length episodes: {:?}", a.notes());
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
    let _rng = backend_rng();
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

/// Balances pixel-cartpole from its proprio sensor (push towards the side the pole falls to):
/// the "trained" agent of the tests below, without a training run.
struct Balancer;

impl Policy<Flex> for Balancer {
    fn act(
        &self,
        space: &ObsSpace,
        _: &ActionSpace,
        obs: &BatchObs,
        _: bool,
        _: &mut rand::rngs::StdRng,
        _: &burn::prelude::Device<Flex>,
    ) -> BatchActions {
        let m = space.require("proprio").unwrap();
        // Stacked frames, oldest first: the newest (x, x_dot, theta, theta_dot) is the last four.
        let n = obs.numel(m);
        let proprio = obs.modality_f32(m).unwrap();
        BatchActions::Discrete(
            proprio.chunks(n).map(|s| &s[n - 4..]).map(|s| i64::from(s[2] + 0.5 * s[3] > 0.0)).collect(),
        )
    }
}

#[test]
fn on_pixel_cartpole_the_episode_return_tells_a_balancing_agent_from_the_random_policy() {
    let params = toml::Table::new();
    let space = make("pixel-cartpole", &params).unwrap().observation_space().clone();
    let agents = [("balancer".to_string(), &Balancer as &dyn Policy<Flex>, space)];
    let protocol = EvalConfig {
        episodes: 8,
        steps: 200,
        num_envs: 4,
        dropout_p: vec![],
        noise_sigma: vec![],
        ..EvalConfig::default()
    };
    let by_return = evaluate::<Flex>(&agents, "pixel-cartpole", &params, &protocol, &Default::default(), None).unwrap();
    let all = by_return.rows.iter().find(|r| r.condition == "all").unwrap();
    assert!(all.return_mean > 150.0, "the balancer lasts: {all:?}");
    assert!(by_return.random_return_mean < 50.0, "the random policy falls: {}", by_return.random_return_mean);
    assert_eq!(all.retention, 1.0);
    // Without its proprio sensor the balancer reads zeros and pushes one way: less than it had.
    let pixels_only = by_return.rows.iter().find(|r| r.condition == "pixels only").unwrap();
    assert!(pixels_only.retention.is_finite() && pixels_only.retention < 0.5, "{pixels_only:?}");
    let table = by_return.to_markdown();
    assert!(table.contains("score = episode return"), "{table}");

    // The per-step score (+1 a step for everyone) cannot tell them apart, and says so.
    let per_step = EvalConfig { score: Score::PerStep, ..protocol };
    let report = evaluate::<Flex>(&agents, "pixel-cartpole", &params, &per_step, &Default::default(), None).unwrap();
    assert_eq!((report.random_per_step_mean, report.rows[0].per_step_mean), (1.0, 1.0));
    assert!(report.rows[0].retention.is_nan());
    assert!(report.to_markdown().contains("ended before 200 steps"), "{}", report.to_markdown());
}

/// A cart drifting at a velocity that Gymnasium would bound with ±inf: modality `velocity`
/// (unbounded), `position` (bounded); reward -|position|.
struct Drift {
    space: ObsSpace,
    actions: ActionSpace,
    state: (f32, f32),
}

impl Drift {
    fn new() -> Self {
        let space = ObsSpace::new([
            ("position", ModalitySpec::uniform(&[1], DType::F32, -10.0, 10.0)),
            ("velocity", ModalitySpec::uniform(&[1], DType::F32, f32::NEG_INFINITY, f32::INFINITY)),
        ])
        .unwrap();
        Self { space, actions: ActionSpace::Box { low: vec![-1.0], high: vec![1.0] }, state: (0.0, 0.0) }
    }
    fn obs(&self) -> Obs {
        Obs::new(vec![ModalityData::F32(vec![self.state.0]), ModalityData::F32(vec![self.state.1])])
    }
}

impl Env for Drift {
    fn name(&self) -> &str {
        "drift"
    }
    fn observation_space(&self) -> &ObsSpace {
        &self.space
    }
    fn action_space(&self) -> &ActionSpace {
        &self.actions
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        self.state = (0.0, seed.unwrap_or(0) as f32 % 3.0 - 1.0);
        Ok((self.obs(), Info::new()))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let Action::Continuous(a) = action else { unreachable!("a Box action space") };
        self.state.1 += a[0];
        self.state.0 = (self.state.0 + 0.1 * self.state.1).clamp(-10.0, 10.0);
        Ok(Step {
            obs: self.obs(),
            reward: -self.state.0.abs() as f64,
            terminated: false,
            truncated: false,
            info: Info::new(),
        })
    }
}

/// Brakes: pushes against the velocity it sees.
struct Brake;

impl Policy<Flex> for Brake {
    fn act(
        &self,
        space: &ObsSpace,
        _: &ActionSpace,
        obs: &BatchObs,
        _: bool,
        _: &mut rand::rngs::StdRng,
        _: &burn::prelude::Device<Flex>,
    ) -> BatchActions {
        let v = obs.modality_f32(space.require("velocity").unwrap()).unwrap();
        BatchActions::Continuous(v.iter().map(|v| (-v).clamp(-1.0, 1.0)).collect())
    }
}

#[test]
fn noise_on_an_unbounded_modality_is_scaled_by_the_random_policys_spread_never_infinite() {
    register("drift", EnvDefaults::default(), |_: toml::Table| Ok(Drift::new()));
    // Directly, relative to an infinite range: refused, naming the modality.
    let noisy = Condition::Noise { modality: "velocity".into(), sigma: 0.1 };
    let err = noisy.wrap(make("drift", &toml::Table::new()).unwrap()).err().expect("refused").to_string();
    assert!(err.contains("`velocity`") && err.contains("inf"), "{err}");

    let space = Drift::new().space;
    let agents = [("brake".to_string(), &Brake as &dyn Policy<Flex>, space)];
    let protocol = EvalConfig {
        episodes: 6,
        steps: 40,
        num_envs: 3,
        dropout_p: vec![],
        noise_sigma: vec![0.5],
        frozen: false,
        ..EvalConfig::default()
    };
    let report = evaluate::<Flex>(&agents, "drift", &toml::Table::new(), &protocol, &Default::default(), None).unwrap();
    let scale = &report.noise_scales["velocity"];
    assert_eq!(report.noise_scales.len(), 1, "only the unbounded modality is measured");
    assert!(scale.len() == 1 && scale[0].is_finite() && scale[0] > 0.5, "{scale:?}");
    let row = |c: &str| report.rows.iter().find(|r| r.condition == c).unwrap();
    let (clean, noisy) = (row("all"), row("velocity noise 0.5"));
    assert!(noisy.return_mean.is_finite() && noisy.return_mean < clean.return_mean, "{clean:?} {noisy:?}");
    assert!(report.to_markdown().contains("`velocity` has an infinite bound"), "{}", report.to_markdown());
}

/// Pushes one way whatever it sees: the weak "specialist" of the tests below.
struct PushLeft;

impl Policy<Flex> for PushLeft {
    fn act(
        &self,
        _: &ObsSpace,
        _: &ActionSpace,
        obs: &BatchObs,
        _: bool,
        _: &mut rand::rngs::StdRng,
        _: &burn::prelude::Device<Flex>,
    ) -> BatchActions {
        BatchActions::Discrete(vec![0; obs.num_envs()])
    }
}

/// Pushes left and right by turns (one turn per vector step, every environment alike): a
/// "specialist" that lasts a little longer than pushing one way.
struct Alternate(std::cell::Cell<i64>);

impl Policy<Flex> for Alternate {
    fn act(
        &self,
        _: &ObsSpace,
        _: &ActionSpace,
        obs: &BatchObs,
        _: bool,
        _: &mut rand::rngs::StdRng,
        _: &burn::prelude::Device<Flex>,
    ) -> BatchActions {
        self.0.set(1 - self.0.get());
        BatchActions::Discrete(vec![self.0.get(); obs.num_envs()])
    }
}

/// pixel-cartpole's space restricted to `modality` (what a specialist on it observes).
fn single(space: &ObsSpace, modality: &str) -> ObsSpace {
    ObsSpace::new([(modality, space.spec(space.require(modality).unwrap()).clone())]).unwrap()
}

fn cartpole_protocol() -> EvalConfig {
    EvalConfig { episodes: 8, steps: 200, num_envs: 4, dropout_p: vec![], noise_sigma: vec![], ..EvalConfig::default() }
}

#[test]
fn specialists_run_the_single_sensor_episodes_and_each_row_gets_its_fraction_by_value() {
    let params = toml::Table::new();
    let space = make("pixel-cartpole", &params).unwrap().observation_space().clone();
    let agents = [("balancer".to_string(), &Balancer as &dyn Policy<Flex>, space.clone())];
    // A proprio specialist that balances, seeing proprio alone; two runs of a pixels specialist
    // (averaged), one pushing left, one pushing by turns.
    let alternate = Alternate(std::cell::Cell::new(0));
    let references = References {
        specialists: vec![
            (
                "proprio".into(),
                vec![("balancer-proprio".into(), &Balancer as &dyn Policy<Flex>, single(&space, "proprio"))],
            ),
            (
                "pixels".into(),
                vec![
                    ("left-a".into(), &PushLeft as &dyn Policy<Flex>, single(&space, "pixels")),
                    ("turns".into(), &alternate as &dyn Policy<Flex>, single(&space, "pixels")),
                ],
            ),
        ],
        full: vec![],
    };
    let protocol = cartpole_protocol();
    let report = evaluate_with_references::<Flex>(
        &agents,
        &references,
        "pixel-cartpole",
        &params,
        &protocol,
        &Default::default(),
        None,
    )
    .unwrap();
    let row = |c: &str| report.rows.iter().find(|r| r.condition == c).unwrap();
    let reference = |c: &str| report.references.iter().find(|r| r.condition == c).unwrap();
    let random = report.random_return_mean;

    // The proprio specialist is the same controller on the same episodes: exactly the agent's
    // `proprio only` score, so the fraction is exactly 1.
    let proprio = reference("proprio only");
    assert_eq!(proprio.kind, ReferenceKind::Specialist { modality: "proprio".into() });
    assert_eq!(proprio.score, row("proprio only").return_mean);
    assert_eq!(row("proprio only").vs_reference, Some(1.0));
    // Two runs of the pixels specialist: their mean; the fraction by its definition.
    let pixels = reference("pixels only");
    assert_eq!(pixels.runs.len(), 2);
    assert_ne!(pixels.runs[0].return_mean, pixels.runs[1].return_mean, "two different runs");
    assert_eq!(pixels.score, (pixels.runs[0].return_mean + pixels.runs[1].return_mean) / 2.0);
    assert!(pixels.runs[0].return_mean < 15.0, "pushing left falls fast: {:?}", pixels.runs[0]);
    let expected = (row("pixels only").return_mean - random) / (pixels.score - random);
    assert!((row("pixels only").vs_reference.unwrap() - expected).abs() < 1e-12);
    assert_eq!(
        row("pixels only").vs_reference,
        Some(reference_fraction(row("pixels only").return_mean, pixels.score, random))
    );
    // No full-sensor reference named: the best agent's `all` score (here the only agent's).
    let all = reference("all");
    assert_eq!((all.kind.clone(), all.score), (ReferenceKind::BestAgent, row("all").return_mean));
    assert_eq!(row("all").vs_reference, Some(1.0));
    for c in ["pixels frozen", "proprio frozen"] {
        assert_eq!(row(c).vs_reference, None, "{c} has no reference");
    }
    // Every file says so: the table in brackets, the CSV in two columns, the JSON in fields.
    let table = report.to_markdown();
    assert!(table.contains("[vs reference]") && table.contains("`left-a`, `turns`"), "{table}");
    assert!(cells_of(&table, "proprio only").ends_with("(1.00) [1.00] |"), "{table}");
    assert!(!cells_of(&table, "pixels frozen").contains('['), "{table}");
    let csv = report.to_csv();
    assert!(csv.lines().next().unwrap().ends_with(",reference,vs_reference"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("balancer,proprio only,") && l.ends_with(",1")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("balancer,pixels frozen,") && l.ends_with(",,")), "{csv}");
    let json: EvalReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json, report);

    // A named full-sensor reference replaces the best agent: the balancer against a pusher.
    let full = References {
        specialists: vec![],
        full: vec![("pusher".into(), &PushLeft as &dyn Policy<Flex>, space.clone())],
    };
    let report = evaluate_with_references::<Flex>(
        &agents,
        &full,
        "pixel-cartpole",
        &params,
        &protocol,
        &Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(report.references.len(), 1);
    assert_eq!(report.references[0].kind, ReferenceKind::Full);
    let (all, pusher) = (report.rows.iter().find(|r| r.condition == "all").unwrap(), &report.references[0]);
    assert_eq!(pusher.runs[0].label, "pusher");
    assert_eq!(all.vs_reference, Some(reference_fraction(all.return_mean, pusher.score, report.random_return_mean)));
    // The pusher falls sooner than the random policy: a reference below random, a negative fraction.
    assert!(pusher.score < report.random_return_mean && all.vs_reference.unwrap() < 0.0, "{all:?} {pusher:?}");
}

/// The cells after the condition of the table row `| condition | ... |`.
fn cells_of(table: &str, condition: &str) -> String {
    table.lines().find(|l| l.starts_with(&format!("| {condition} |"))).unwrap().to_string()
}

#[test]
fn without_references_the_report_and_its_json_are_as_before() {
    let params = toml::Table::new();
    let space = make("pixel-cartpole", &params).unwrap().observation_space().clone();
    let agents = [("balancer".to_string(), &Balancer as &dyn Policy<Flex>, space)];
    let protocol = EvalConfig { episodes: 2, steps: 20, ..cartpole_protocol() };
    let report = evaluate::<Flex>(&agents, "pixel-cartpole", &params, &protocol, &Default::default(), None).unwrap();
    assert!(report.references.is_empty() && report.rows.iter().all(|r| r.vs_reference.is_none()));
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("reference"), "{json}");
    assert!(!report.to_markdown().contains('['), "{}", report.to_markdown());
    // A committed report, written before references existed, still reads.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/ppo-pendulum/m3ixup-s1/eval/eval.json");
    let old: EvalReport = serde_json::from_str(&fs::read_to_string(committed).unwrap()).unwrap();
    assert!(old.references.is_empty() && old.rows.iter().all(|r| r.vs_reference.is_none()));
}

#[test]
fn a_specialist_that_needs_a_sensor_its_condition_lacks_or_names_no_sensor_fails_before_any_episode() {
    let params = toml::Table::new();
    let space = make("pixel-cartpole", &params).unwrap().observation_space().clone();
    let agents = [("balancer".to_string(), &Balancer as &dyn Policy<Flex>, space.clone())];
    let fails = |specialists: Vec<(String, Vec<LabelledPolicy<Flex>>)>| {
        let references = References { specialists, full: vec![] };
        let protocol = EvalConfig { episodes: 1, steps: 1, ..cartpole_protocol() };
        evaluate_with_references::<Flex>(
            &agents,
            &references,
            "pixel-cartpole",
            &params,
            &protocol,
            &Default::default(),
            None,
        )
        .unwrap_err()
        .to_string()
    };
    let err =
        fails(vec![("lidar".into(), vec![("x".into(), &Balancer as &dyn Policy<Flex>, single(&space, "proprio"))])]);
    assert!(err.contains("`lidar`") && err.contains("pixels, proprio"), "{err}");
    // Trained with both sensors: it needs pixels, which `proprio only` lacks.
    let err = fails(vec![("proprio".into(), vec![("both".into(), &Balancer as &dyn Policy<Flex>, space.clone())])]);
    assert!(err.contains("`both`") && err.contains("needs `pixels`") && err.contains("`proprio only`"), "{err}");
    // A pixels run given as the proprio specialist.
    let err = fails(vec![(
        "proprio".into(),
        vec![("eyes".into(), &PushLeft as &dyn Policy<Flex>, single(&space, "pixels"))],
    )]);
    assert!(err.contains("`eyes`") && err.contains("needs `pixels`"), "{err}");
    // The right sensor with another spec (another environment setting).
    let other = ObsSpace::new([("proprio", ModalitySpec::uniform(&[3], DType::F32, -1.0, 1.0))]).unwrap();
    let err = fails(vec![("proprio".into(), vec![("odd".into(), &Balancer as &dyn Policy<Flex>, other)])]);
    assert!(err.contains("`odd`") && err.contains("[3]"), "{err}");
    // One modality given twice.
    let twice = |label: &str| (label.to_string(), &Balancer as &dyn Policy<Flex>, single(&space, "proprio"));
    let err = fails(vec![("proprio".into(), vec![twice("a")]), ("proprio".into(), vec![twice("b")])]);
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn the_specialist_configs_are_the_m3ixup_config_on_one_sensor_with_the_main_configs_ppo_settings() {
    let m3ixup = common::config_path("ppo-pendulum-m3ixup.toml");
    let main: PpoConfig = load(Some(&common::config_path("ppo-pendulum.toml")), &[]).unwrap();
    for (modality, off) in [("pixels", "sound"), ("sound", "pixels")] {
        let path = common::config_path(&format!("ppo-pendulum-specialist-{modality}.toml"));
        let specialist: PpoConfig = load(Some(&path), &[]).unwrap();
        specialist.validate().unwrap();
        let epochs = format!("ppo.update_epochs={}", main.ppo.update_epochs);
        let changes = [format!("env.params.{off}=false"), "aux.kind=\"none\"".into(), epochs];
        let expected: PpoConfig = load(Some(&m3ixup), &changes).unwrap();
        assert_eq!(specialist, expected, "{modality}: the M3ixup config's network and budget");
        // A reference is trained as the agent it judges: the main config's PPO settings, but
        // for the auxiliary loss's weight schedule and the cross-modal consistency term, weight
        // and rows (the specialist has no auxiliary loss and one sensor).
        let main_ppo = PpoSection {
            aux_weight_final: specialist.ppo.aux_weight_final,
            consistency_weight: specialist.ppo.consistency_weight,
            consistency_rows: specialist.ppo.consistency_rows,
            ..main.ppo.clone()
        };
        assert_eq!(specialist.ppo, main_ppo, "{modality}: the main config's PPO settings");
        assert_eq!(
            (&specialist.rollout, &specialist.encoder, &specialist.train),
            (&main.rollout, &main.encoder, &main.train)
        );
        let env = make(&specialist.env.name, &specialist.env.params).unwrap();
        assert_eq!(env.observation_space().names().collect::<Vec<_>>(), [modality]);
    }
}

#[test]
fn the_main_config_is_the_m3ixup_config_with_exactly_the_five_changes_the_studies_chose() {
    // The README's eleventh study trained exactly this agent as `all-rows-w05` (the ninth
    // study's `cons1`, the seventh's `ep12` with the consistency term, with the term on every
    // row at half the weight).
    let main: PpoConfig = load(Some(&common::config_path("ppo-pendulum.toml")), &[]).unwrap();
    main.validate().unwrap();
    let changes = [
        "env.params.sensor_dropout.mode=\"per-episode\"",
        "env.params.sensor_dropout.p=0.5",
        "aux.joint_gradient=0.0",
        "ppo.aux_weight_final=0.0",
        "ppo.update_epochs=12",
        "env.params.sensor_dropout.keep_data=true",
        "ppo.consistency_weight=0.5",
        "ppo.consistency_rows=\"all\"",
    ]
    .map(String::from);
    let expected: PpoConfig = load(Some(&common::config_path("ppo-pendulum-m3ixup.toml")), &changes).unwrap();
    assert_eq!(main, expected);
    let env = make(&main.env.name, &main.env.params).unwrap();
    assert_eq!(env.observation_space().names().collect::<Vec<_>>(), ["pixels", "sound"]);
}

/// Runs the `evaluate` binary; (success, stderr).
fn evaluate_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evaluate")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn evaluate_takes_specialists_per_modality_and_names_bad_ones() {
    let _rng = backend_rng();
    let agent = smoke_checkpoint("cli-agent", &["train.total_steps=64"]);
    let pixels =
        smoke_checkpoint("cli-pixels", &["env.params.sound=false", "aux.kind=\"none\"", "train.total_steps=64"]);
    let (agent_s, pixels_s) = (agent.display().to_string(), pixels.display().to_string());
    let out = fresh_dir("cli-out");
    let out_s = out.display().to_string();
    let small = ["--episodes", "2", "--steps", "5", "--p", "--noise", "--no-frozen", "--quiet", "--out", &out_s];

    let spec = format!("pixels={pixels_s}");
    let (ok, err) = evaluate_cli(&[&["--checkpoint", &agent_s, "--specialist", &spec][..], &small].concat());
    assert!(ok, "{err}");
    let report: EvalReport = serde_json::from_str(&fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let conditions: Vec<&str> = report.references.iter().map(|r| r.condition.as_str()).collect();
    assert_eq!(conditions, ["all", "pixels only"]);
    let pixels_only = report.rows.iter().find(|r| r.condition == "pixels only").unwrap();
    assert!(pixels_only.vs_reference.is_some() && fs::read_to_string(out.join("eval.md")).unwrap().contains("] |"));
    // The specialist evaluated alone, on its own one-sensor pendulum, scores what it scored as
    // the reference (the pendulum draws its start state from the seed only): `report`'s
    // reference, from its own evaluation, is the same figure.
    let alone = fresh_dir("cli-alone");
    let alone_s = alone.display().to_string();
    let mut args = vec!["--checkpoint", &pixels_s];
    args.extend_from_slice(&small[..small.len() - 1]);
    args.push(&alone_s);
    let (ok, err) = evaluate_cli(&args);
    assert!(ok, "{err}");
    let own: EvalReport = serde_json::from_str(&fs::read_to_string(alone.join("eval.json")).unwrap()).unwrap();
    let reference = report.references.iter().find(|r| r.condition == "pixels only").unwrap();
    assert_eq!(own.rows[0].condition, "all");
    assert_eq!(own.rows[0].return_mean, reference.runs[0].return_mean);
    fs::remove_dir_all(alone).unwrap();

    // Unknown modality; a specialist that needs the other sensor; a missing directory; no `=`.
    let bad = |specialist: &str| {
        evaluate_cli(&[&["--checkpoint", &agent_s, "--specialist", specialist][..], &small].concat())
    };
    let (ok, err) = bad(&format!("lidar={pixels_s}"));
    assert!(!ok && err.contains("`lidar`") && err.contains("pixels, sound"), "{err}");
    let (ok, err) = bad(&format!("sound={agent_s}"));
    assert!(!ok && err.contains("needs `pixels`") && err.contains("`sound only`"), "{err}");
    let (ok, err) = bad(&format!("sound={pixels_s}"));
    assert!(!ok && err.contains("needs `pixels`"), "{err}");
    let (ok, err) = bad("pixels=no/such/run");
    assert!(!ok && err.contains("no/such/run") && err.contains("not a directory"), "{err}");
    let (ok, err) = bad("pixels");
    assert!(!ok && err.contains("MODALITY=DIR"), "{err}");
    // A full-sensor reference must observe every sensor.
    let (ok, err) = evaluate_cli(&[&["--checkpoint", &agent_s, "--full-reference", &pixels_s][..], &small].concat());
    assert!(!ok && err.contains("full-sensor reference"), "{err}");
    for dir in [agent, pixels, out] {
        fs::remove_dir_all(dir).unwrap();
    }
}
