//! What the binaries do, as plain functions: train a config of any registered algorithm,
//! pretrain the encoders, evaluate checkpoints of any algorithm, each on the backend and device
//! a [`DeviceArgs`] names.
//!
//! Inside, each is generic over the algorithm ([`m3ixup_agents::algorithms`]) and the backend
//! ([`BackendJob`]); outside it is not. So every (algorithm, backend) instantiation of the
//! training loops is compiled once, in this library, and the binaries keep their command line
//! and their printing: with LibTorch and wgpu compiled in, each binary instantiating the loops
//! itself made five copies of them, the bulk of a test build's half hour.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::{AutodiffBackend, Backend};

use m3ixup_agents::algorithms::{with_algorithm, Algorithm, AlgorithmConfig, AlgorithmVisitor};
use m3ixup_agents::envs::ObsSpace;
use m3ixup_agents::evaluate::{evaluate_with_references, EvalConfig, EvalReport, Policy, References};
use m3ixup_agents::infra::checkpoint::{
    latest_checkpoint, load_checkpoint_state, CheckpointState, CHECKPOINT_POINTER, STATE_FILE,
};
use m3ixup_agents::infra::harness::{TrainOptions, TrainSummary};
use m3ixup_agents::infra::progress::progress_bar;
use m3ixup_agents::infra::run::{write_atomic, RunDir};
use m3ixup_agents::representation::pretrain::{pretrain, PretrainConfig, PretrainOptions, PretrainSummary};
use m3ixup_agents::representation::sections::EnvSection;

use crate::config::{load_from, to_toml, Source};
use crate::device::{BackendJob, DeviceArgs};
use crate::plot::{
    csv_series, moving_average, write_bar_chart, write_line_chart, Bar, BarChart, BarGroup, LineChart, Series,
};

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

/// A training config of any registered algorithm, read as the algorithm its `algo` key names
/// (`"ppo"` when it has none).
pub struct TrainConfig(Box<dyn AnyTrainConfig>);

/// [`TrainConfig`]'s view of one algorithm's config: the object-safe part of
/// [`AlgorithmConfig`], and training on a device.
/// Send and Sync: a config is plain data, and Python trains one with the GIL released.
trait AnyTrainConfig: Send + Sync {
    fn algo(&self) -> &'static str;
    fn validate(&self) -> anyhow::Result<()>;
    fn env(&self) -> &EnvSection;
    fn plan(&self) -> Option<String>;
    fn to_toml(&self) -> anyhow::Result<String>;
    fn train(&self, run: &RunDir, device: &DeviceArgs, options: &TrainOptions) -> anyhow::Result<TrainSummary>;
}

struct Typed<A: Algorithm>(A::Config);

impl<A: Algorithm> AnyTrainConfig for Typed<A> {
    fn algo(&self) -> &'static str {
        A::NAME
    }
    fn validate(&self) -> anyhow::Result<()> {
        self.0.validate()?;
        Ok(self.0.check_inputs()?)
    }
    fn env(&self) -> &EnvSection {
        self.0.env()
    }
    fn plan(&self) -> Option<String> {
        self.0.plan()
    }
    fn to_toml(&self) -> anyhow::Result<String> {
        to_toml(&self.0)
    }
    fn train(&self, run: &RunDir, device: &DeviceArgs, options: &TrainOptions) -> anyhow::Result<TrainSummary> {
        struct Job<'a, A: Algorithm> {
            config: &'a A::Config,
            run: &'a RunDir,
            options: &'a TrainOptions,
        }
        impl<A: Algorithm> BackendJob for Job<'_, A> {
            type Output = TrainSummary;
            fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<TrainSummary> {
                Ok(A::train::<B>(self.config, self.run, &device, self.options)?)
            }
        }
        device.run(Job::<A> { config: &self.0, run, options })
    }
}

impl TrainConfig {
    /// Reads the config file (`None`: the defaults) with `overrides` (`section.key=value`) as
    /// the algorithm its `algo` key names.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> anyhow::Result<Self> {
        Self::load_from(path.map_or(Source::Defaults, Source::File), overrides)
    }

    /// [`Self::load`] from any [`Source`] (a file, TOML text, the defaults).
    pub fn load_from(source: Source, overrides: &[String]) -> anyhow::Result<Self> {
        struct Load<'a> {
            source: Source<'a>,
            overrides: &'a [String],
        }
        impl AlgorithmVisitor for Load<'_> {
            type Output = anyhow::Result<TrainConfig>;
            fn visit<A: Algorithm>(self) -> Self::Output {
                let config: A::Config = load_from(self.source, self.overrides)?;
                Ok(TrainConfig(Box::new(Typed::<A>(config))))
            }
        }
        let table: toml::Table = load_from(source, overrides)?;
        let algo = match table.get("algo") {
            None => m3ixup_agents::algorithms::ppo::Ppo::NAME.to_string(),
            Some(toml::Value::String(name)) => name.clone(),
            Some(other) => bail!("{}: `algo = {other}` is not a string", source.name()),
        };
        with_algorithm(&algo, Load { source, overrides }).with_context(|| format!("{}: `algo`", source.name()))?
    }

    /// The algorithm's name.
    pub fn algo(&self) -> &'static str {
        self.0.algo()
    }

    pub fn env_name(&self) -> &str {
        &self.0.env().name
    }

    /// `<algo>-<env>`, the default run-name prefix.
    pub fn kind(&self) -> String {
        format!("{}-{}", self.algo(), self.env_name())
    }

    /// Checks every value and what the config points at (files); the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.0.validate().context("invalid train config")
    }

    /// A line on the run's length, if the algorithm has one to give.
    pub fn plan(&self) -> Option<String> {
        self.0.plan()
    }

    /// The resolved config as TOML (what the run directory's `config.toml` holds).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        self.0.to_toml()
    }

    /// Trains on `device`, writing to `run`.
    pub fn train(&self, run: &RunDir, device: &DeviceArgs, options: &TrainOptions) -> anyhow::Result<TrainSummary> {
        self.0
            .train(run, device, options)
            .with_context(|| format!("training failed (run directory {})", run.path().display()))
    }
}

/// A training run's directory, new or continued, with the config it trains: what the `train`
/// binary and Python's `m3ixup.train` open before training.
pub struct TrainRun {
    pub config: TrainConfig,
    pub run: RunDir,
    /// Continues the directory's last checkpoint.
    pub resumed: bool,
}

impl TrainRun {
    /// A new run under `runs_dir` (named `name`, or `<algo>-<env>-<UTC time>`). The config is
    /// checked first, so that a failed start leaves no directory to block the name, and
    /// `config.toml` is written at once, so that a run killed at any moment after this can be
    /// resumed from its directory alone (before its first checkpoint, it starts over).
    pub fn create(config: TrainConfig, runs_dir: &Path, name: Option<&str>) -> anyhow::Result<Self> {
        config.validate()?;
        let run = RunDir::create(runs_dir, name, &config.kind())
            .with_context(|| format!("cannot create the run directory under {}", runs_dir.display()))?;
        run.write_config(&config.to_toml()?)
            .with_context(|| format!("cannot write {}", run.file("config.toml").display()))?;
        Ok(Self { config, run, resumed: false })
    }

    /// The run in `dir`, continued from its last checkpoint with its own `config.toml`.
    pub fn resume(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.toml");
        if !path.is_file() {
            bail!("{}: no config.toml there (is it a run directory?)", dir.display());
        }
        let config = TrainConfig::load(Some(&path), &[])?;
        config.validate()?;
        let run = RunDir::at(dir).with_context(|| format!("cannot open the run directory {}", dir.display()))?;
        Ok(Self { config, run, resumed: true })
    }

    /// Trains on `device` (`options.resume` follows [`Self::resumed`]). A new run that failed
    /// before it logged or saved anything frees its name again.
    pub fn train(&self, device: &DeviceArgs, options: &TrainOptions) -> anyhow::Result<TrainSummary> {
        let options =
            TrainOptions { resume: self.resumed, learner_threads: device.learner_threads(), ..options.clone() };
        let error = match self.config.train(&self.run, device, &options) {
            Ok(summary) => return Ok(summary),
            Err(e) => e,
        };
        if !self.resumed {
            let path = self.run.path().to_path_buf();
            if RunDir::at(&path).and_then(|run| run.remove_if_unused(CHECKPOINT_POINTER)).unwrap_or(false) {
                return Err(error.context(format!("(its empty run directory {} was removed)", path.display())));
            }
        }
        Err(error)
    }

    /// Draws the whole run's learning curve (resumed parts included, from its metrics file) as
    /// `learning_curve.png`; returns its path.
    pub fn write_learning_curve(&self) -> anyhow::Result<PathBuf> {
        let points = csv_series(&self.run.file("metrics.csv"), "global_step", "charts/reward_per_step")?;
        let curve = self.run.file("learning_curve.png");
        write_line_chart(
            &curve,
            &LineChart {
                title: &format!("{} on {}: training reward per step", self.config.algo(), self.config.env_name()),
                x_label: "environment steps",
                y_label: "reward per step",
                series: &[
                    Series::new("per metrics row", points.clone()),
                    Series::new("10-row average", moving_average(&points, 10)),
                ],
            },
        )?;
        Ok(curve)
    }
}

// ---------------------------------------------------------------------------------------------
// Pretraining
// ---------------------------------------------------------------------------------------------

/// Pretrains the encoders as configured on `device`, writing to `run`.
pub fn pretrain_encoders(
    config: &PretrainConfig,
    run: &RunDir,
    device: &DeviceArgs,
    options: PretrainOptions,
) -> anyhow::Result<PretrainSummary> {
    struct Job<'a> {
        config: &'a PretrainConfig,
        run: &'a RunDir,
        options: PretrainOptions,
    }
    impl BackendJob for Job<'_> {
        type Output = PretrainSummary;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<PretrainSummary> {
            Ok(pretrain::<B>(self.config, self.run, &device, &self.options)?.1)
        }
    }
    device
        .run(Job { config, run, options })
        .with_context(|| format!("pretraining failed (run directory {})", run.path().display()))
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// One agent to evaluate: its label in the table, and a run directory (its last checkpoint is
/// used) or a checkpoint directory.
#[derive(Clone, Debug)]
pub struct EvalAgent {
    pub label: String,
    pub checkpoint: PathBuf,
}

/// The runs an evaluation compares its rows with (`m3ixup_agents::evaluate::References`).
#[derive(Clone, Debug, Default)]
pub struct EvalReferences {
    /// Per modality, its specialists: runs trained on that modality alone, the reference of the
    /// `<modality> only` rows (several runs: their mean).
    pub specialists: Vec<(String, Vec<EvalAgent>)>,
    /// Runs trained with every sensor, the reference of the `all` rows (none: the best agent's
    /// `all` score, when there are specialists).
    pub full: Vec<EvalAgent>,
}

/// The sensor-failure table of `agents`, on their environment (or on `env`), on `device`
/// (inference only: the autodiff backend's inner backend runs the agents), with `references`
/// (`EvalReferences::default()`: none). Every checkpoint loads, and every reference is checked
/// against the environment, before any episode runs.
pub fn evaluate_checkpoints(
    agents: &[EvalAgent],
    references: &EvalReferences,
    env: Option<&str>,
    config: &EvalConfig,
    device: &DeviceArgs,
    verbose: bool,
) -> anyhow::Result<EvalReport> {
    struct Job<'a> {
        agents: &'a [EvalAgent],
        references: &'a EvalReferences,
        env: Option<&'a str>,
        config: &'a EvalConfig,
        verbose: bool,
    }
    impl BackendJob for Job<'_> {
        type Output = EvalReport;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<EvalReport> {
            evaluate_on::<B::InnerBackend>(self.agents, self.references, self.env, self.config, &device, self.verbose)
        }
    }
    if agents.is_empty() {
        bail!("no agent to evaluate");
    }
    device.run(Job { agents, references, env, config, verbose })
}

/// A trained controller of any algorithm, with what its checkpoint says about it.
struct Loaded<B: Backend> {
    label: String,
    policy: Box<dyn Policy<B>>,
    state: CheckpointState,
    env: EnvSection,
}

/// The checkpoint directory for a run directory or a checkpoint directory.
fn checkpoint_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        bail!("{} is not a directory (a run directory or a checkpoint directory)", path.display());
    }
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path)?
        .with_context(|| format!("{} holds no checkpoint (no checkpoint.toml, no state.toml)", path.display()))
}

/// Loads the checkpoint in `dir` as the algorithm its state names.
fn load_policy<B: Backend>(dir: &Path, label: String, device: &B::Device) -> anyhow::Result<Loaded<B>> {
    struct LoadPolicy<'a, B: Backend> {
        dir: &'a Path,
        device: &'a B::Device,
    }
    impl<B: Backend> AlgorithmVisitor for LoadPolicy<'_, B> {
        type Output = anyhow::Result<(Box<dyn Policy<B>>, CheckpointState, EnvSection)>;
        fn visit<A: Algorithm>(self) -> Self::Output {
            let (agent, state, config) = A::load::<B>(self.dir, self.device)?;
            Ok((Box::new(agent), state, AlgorithmConfig::env(&config).clone()))
        }
    }
    let algo = load_checkpoint_state(dir)?.algo;
    let (policy, state, env) = with_algorithm(&algo, LoadPolicy::<B> { dir, device })
        .with_context(|| format!("{}: `algo`", dir.join(STATE_FILE).display()))??;
    Ok(Loaded { label, policy, state, env })
}

/// `(label, policy, observation space)`, as `m3ixup_agents::evaluate` takes agents.
fn as_policy<B: Backend>(l: &Loaded<B>) -> (String, &dyn Policy<B>, ObsSpace) {
    (l.label.clone(), l.policy.as_ref(), l.state.observation_space.clone())
}

/// Loads `agent`'s checkpoint (`what`: how errors name it).
fn load_agent<B: Backend>(agent: &EvalAgent, what: &str, device: &B::Device) -> anyhow::Result<Loaded<B>> {
    let dir = checkpoint_dir(&agent.checkpoint).with_context(|| format!("{what} (run `{}`)", agent.label))?;
    load_policy::<B>(&dir, agent.label.clone(), device)
        .with_context(|| format!("{what} (run `{}`): cannot load {}", agent.label, dir.display()))
}

fn evaluate_on<B: Backend>(
    agents: &[EvalAgent],
    references: &EvalReferences,
    env: Option<&str>,
    config: &EvalConfig,
    device: &B::Device,
    verbose: bool,
) -> anyhow::Result<EvalReport> {
    let mut loaded = Vec::new();
    for agent in agents {
        loaded.push(load_agent::<B>(agent, "agent", device)?);
    }
    let mut specialists = Vec::new();
    for (modality, runs) in &references.specialists {
        let what = format!("specialist for `{modality}`");
        let runs = runs.iter().map(|r| load_agent::<B>(r, &what, device)).collect::<anyhow::Result<Vec<_>>>()?;
        specialists.push((modality.clone(), runs));
    }
    let full = references
        .full
        .iter()
        .map(|r| load_agent::<B>(r, "full-sensor reference", device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let env_name = env.map_or_else(|| loaded[0].state.env_name.clone(), str::to_string);
    let params = loaded[0].env.params.clone();
    for Loaded { label, state, .. } in &loaded {
        if env.is_none() && state.env_name != env_name {
            bail!(
                "agent `{label}` was trained on `{}`, agent `{}` on `{env_name}`: evaluate them separately or pass --env",
                state.env_name,
                loaded[0].label
            );
        }
    }
    let mut probe_params = params.clone();
    probe_params.remove("sensor_dropout");
    let probe = m3ixup_agents::envs::make(&env_name, &probe_params)?;
    let references_loaded =
        specialists.iter().flat_map(|(m, runs)| runs.iter().map(move |r| (format!("specialist for `{m}`"), r)));
    for (what, r) in references_loaded.chain(full.iter().map(|r| ("full-sensor reference".to_string(), r))) {
        if r.state.env_name != env_name {
            bail!(
                "{what} `{}` was trained on `{}`, but the evaluation runs `{env_name}`: a reference must be trained \
                 on the same environment",
                r.label,
                r.state.env_name
            );
        }
        if r.state.action_space != *probe.action_space() {
            bail!(
                "{what} `{}` acts in {}, but `{env_name}` takes {}",
                r.label,
                r.state.action_space,
                probe.action_space()
            );
        }
    }
    let policies: Vec<_> = loaded.iter().map(as_policy::<B>).collect();
    let references = References {
        specialists: specialists
            .iter()
            .map(|(m, runs)| (m.clone(), runs.iter().map(as_policy::<B>).collect()))
            .collect(),
        full: full.iter().map(as_policy::<B>).collect(),
    };

    let conditions = config.conditions(probe.observation_space()).len();
    let total = (config.episodes * (1 + conditions * policies.len() + references.runs())) as u64;
    let bar = progress_bar(verbose, total, "", "episodes");
    let report = evaluate_with_references::<B>(&policies, &references, &env_name, &params, config, device, Some(&bar))?;
    bar.finish_and_clear();
    Ok(report)
}

/// Writes `eval.md`, `eval.csv`, `eval.json` (each atomically) and `dropout.png` (the scores by
/// condition, one bar per agent, the random policy's as a line) into `out`, made if missing.
pub fn write_eval_report(report: &EvalReport, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("eval.md"), report.to_markdown().as_bytes())?;
    write_atomic(&out.join("eval.csv"), report.to_csv().as_bytes())?;
    write_atomic(&out.join("eval.json"), serde_json::to_string_pretty(report)?.as_bytes())?;

    let mut groups: Vec<BarGroup> = Vec::new();
    for row in &report.rows {
        let k = report.agents.iter().position(|a| *a == row.agent).expect("row of a known agent");
        let group = match groups.iter_mut().position(|g| g.label == row.condition) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(BarGroup { label: row.condition.clone(), bars: vec![None; report.agents.len()] });
                groups.last_mut().expect("just pushed")
            }
        };
        let (mean, std) = row.score(report.config.score);
        group.bars[k] = Some(Bar { mean, std });
    }
    let what = report.config.score.describe();
    let title = format!("{}: {what} under sensor failures", report.env);
    write_bar_chart(
        &out.join("dropout.png"),
        &BarChart {
            title: &title,
            y_label: what,
            series_labels: &report.agents,
            groups: &groups,
            reference: Some(("random policy", report.random_score().0)),
        },
    )?;
    Ok(())
}
