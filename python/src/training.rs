//! `m3ixup._native.train`, `evaluate` and `report`: the Rust trainers, the sensor-failure
//! evaluation and the results table in this process, for `m3ixup.train`, `m3ixup.evaluate` and
//! `m3ixup.report` (python/m3ixup/training.py). The run is the `train` binary's (the same
//! [`TrainRun`]: run directory, metrics, checkpoints, resume, learning curve), on the device
//! named, with the GIL released while it trains; each metrics row goes to `on_update`. The
//! evaluation is the `evaluate` binary's, with the same result files; the table is `report`'s.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use m3ixup::agents::evaluate::{EvalConfig, Score};
use m3ixup::agents::infra::harness::{OnRow, Row, TrainOptions, TrainSummary};
use m3ixup::config::Source;
use m3ixup::device::{DeviceArgs, DeviceSpec};
use m3ixup::envs::error::panic_message;
use m3ixup::jobs::{evaluate_checkpoints, write_eval_report, EvalAgent, EvalReferences, TrainConfig, TrainRun};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList};

use crate::params_table;

fn device_args(device: &str, threads: Option<usize>) -> PyResult<DeviceArgs> {
    let spec: DeviceSpec = device.parse().map_err(|e| PyValueError::new_err(format!("device: {e}")))?;
    let device = DeviceArgs { device: spec, threads, ..DeviceArgs::default() };
    device.check().map_err(value_error)?;
    Ok(device)
}

/// Runs `work` with the GIL released; its error or panic as `RuntimeError`.
fn without_gil<T: Send>(py: Python<'_>, what: &str, work: impl FnOnce() -> anyhow::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(work))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(PyRuntimeError::new_err(format!("{e:#}"))),
        Err(panic) => Err(PyRuntimeError::new_err(format!("{what} panicked: {}", panic_message(&*panic)))),
    }
}

/// Bad input (config, overrides, device, run directory) as `ValueError`, with the whole chain
/// of causes (the file, the key, the value).
fn value_error(e: anyhow::Error) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}

/// The config as Python gives it: a path, TOML text, or a dict (as the TOML tables).
enum ConfigInput {
    File(PathBuf),
    Text(String),
}

fn config_input(config: &Bound<'_, PyAny>) -> PyResult<ConfigInput> {
    if let Ok(dict) = config.cast::<PyDict>() {
        let table = params_table(Some(dict))?;
        let text = toml::to_string(&table).map_err(|e| PyValueError::new_err(format!("config dict: {e}")))?;
        return Ok(ConfigInput::Text(text));
    }
    if let Ok(text) = config.extract::<String>() {
        // A string is a file when one exists there, else TOML text when it reads as TOML.
        if std::path::Path::new(&text).is_file() {
            return Ok(ConfigInput::File(text.into()));
        }
        if text.contains('=') || text.contains('\n') || text.trim().is_empty() {
            return Ok(ConfigInput::Text(text));
        }
        return Err(PyValueError::new_err(format!(
            "config `{text}`: no such file (a config is a TOML file's path, TOML text or a dict)"
        )));
    }
    // pathlib.Path and other os.PathLike.
    let path: PathBuf = config
        .extract()
        .map_err(|_| PyValueError::new_err("config: expected a TOML file's path, TOML text or a dict".to_string()))?;
    if !path.is_file() {
        return Err(PyValueError::new_err(format!("config {}: no such file", path.display())));
    }
    Ok(ConfigInput::File(path))
}

/// The run to train: `run_dir` continued when it holds a run (of the same config), created
/// when it does not exist; without `run_dir`, a new one under `runs_dir`.
fn open_run(config: TrainConfig, run_dir: Option<PathBuf>, runs_dir: PathBuf) -> anyhow::Result<TrainRun> {
    let Some(dir) = run_dir else {
        return TrainRun::create(config, &runs_dir, None);
    };
    if dir.join("config.toml").is_file() {
        let run = TrainRun::resume(&dir)?;
        if run.config.to_toml()? != config.to_toml()? {
            anyhow::bail!(
                "run_dir {}: it holds a run of another config (its config.toml differs from the one given); \
                 give a new run_dir, or the same config to continue that run",
                dir.display()
            );
        }
        return Ok(run);
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("run_dir {}: expected a directory path ending in a name", dir.display()))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    TrainRun::create(config, parent, Some(name))
}

fn row_dict<'py>(py: Python<'py>, row: &Row) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in row {
        dict.set_item(key, value)?;
    }
    Ok(dict)
}

/// The training config as Python gives it, with `overrides` applied.
fn load_config(config: &Bound<'_, PyAny>, overrides: &[String]) -> PyResult<TrainConfig> {
    let input = config_input(config)?;
    let source = match &input {
        ConfigInput::File(path) => Source::File(path),
        ConfigInput::Text(text) => Source::Text(text),
    };
    TrainConfig::load_from(source, overrides).map_err(value_error)
}

/// The whole config a run of `config` with `overrides` would train (every key, defaults filled
/// in: its `config.toml`), checked as `train` checks it; bad input as `ValueError`. A sweep
/// checks every trial's config with it before it starts any.
#[pyfunction]
#[pyo3(signature = (config, *, overrides=Vec::new()))]
pub(crate) fn config_toml(config: &Bound<'_, PyAny>, overrides: Vec<String>) -> PyResult<String> {
    let config = load_config(config, &overrides)?;
    config.validate().map_err(value_error)?;
    config.to_toml().map_err(value_error)
}

/// Trains a config (see `m3ixup.train`). Returns the run's summary as a dict.
#[pyfunction]
#[pyo3(signature = (config, *, run_dir=None, runs_dir=PathBuf::from("runs"), overrides=Vec::new(), device="flex", threads=None, max_updates=None, on_update=None, progress=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn train<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyAny>,
    run_dir: Option<PathBuf>,
    runs_dir: PathBuf,
    overrides: Vec<String>,
    device: &str,
    threads: Option<usize>,
    max_updates: Option<usize>,
    on_update: Option<Py<PyAny>>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let device = device_args(device, threads)?;
    let config = load_config(config, &overrides)?;
    let job = open_run(config, run_dir, runs_dir).map_err(value_error)?;

    // Each row goes to on_update with the GIL taken back; an exception there (or Ctrl-C, seen
    // between rows) stops the run after that row's checkpoint and is raised here afterwards.
    let raised: Arc<Mutex<Option<PyErr>>> = Arc::default();
    let stopped = Arc::new(Mutex::new(false));
    let on_row = {
        let (raised, stopped) = (raised.clone(), stopped.clone());
        OnRow(Arc::new(move |row: &Row| {
            Python::attach(|py| {
                let outcome = py.check_signals().and_then(|()| match &on_update {
                    None => Ok(true),
                    Some(f) => {
                        let answer = f.bind(py).call1((row_dict(py, row)?,))?;
                        // Only False stops (None, the value of a function without return, goes on).
                        Ok(!answer.is_instance_of::<PyBool>() || answer.extract::<bool>()?)
                    }
                });
                let go_on = outcome.unwrap_or_else(|e| {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    false
                });
                if !go_on {
                    *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
                }
                go_on
            })
        }))
    };
    let options = TrainOptions { verbose: progress, max_updates, on_row: Some(on_row), ..TrainOptions::default() };
    let result = without_gil(py, "training", || {
        let summary = job.train(&device, &options)?;
        job.write_learning_curve()?;
        Ok::<TrainSummary, anyhow::Error>(summary)
    });
    if let Some(e) = raised.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let summary = result?;
    let out = PyDict::new(py);
    out.set_item("run_dir", summary.run_dir.to_string_lossy().into_owned())?;
    out.set_item("updates", summary.updates)?;
    out.set_item("global_step", summary.global_step)?;
    out.set_item("wall_seconds", summary.wall_seconds)?;
    out.set_item("sps", summary.sps)?;
    out.set_item("last_reward_per_step", summary.last_reward_per_step)?;
    out.set_item("recent_return", summary.recent_return)?;
    out.set_item("resumed", job.resumed)?;
    out.set_item("stopped_by_on_update", *stopped.lock().unwrap_or_else(|p| p.into_inner()))?;
    let rows = PyList::empty(py);
    for row in &summary.rows {
        rows.append(row_dict(py, row)?)?;
    }
    out.set_item("rows", rows)?;
    Ok(out)
}

/// The evaluation agents: `paths` labelled by `labels` (default: each directory's name).
fn eval_agents(paths: &[PathBuf], labels: Option<Vec<String>>, what: &str) -> PyResult<Vec<EvalAgent>> {
    if let Some(labels) = &labels {
        if labels.len() != paths.len() {
            return Err(PyValueError::new_err(format!(
                "{} labels for {} {what}: give one per checkpoint or none",
                labels.len(),
                paths.len()
            )));
        }
    }
    Ok(paths
        .iter()
        .enumerate()
        .map(|(k, path)| EvalAgent {
            label: labels
                .as_ref()
                .map(|l| l[k].clone())
                .unwrap_or_else(|| path.file_name().map_or(format!("agent {k}"), |n| n.to_string_lossy().into_owned())),
            checkpoint: path.clone(),
        })
        .collect())
}

/// Evaluates checkpoints under sensor failures (see `m3ixup.evaluate`). Returns the report's
/// JSON text (the `eval.json` written to `out`).
#[pyfunction]
#[pyo3(signature = (checkpoints, *, labels=None, env=None, episodes=None, steps=None, seed=None, p=None, noise=None, frozen=true, stochastic=false, score="return", num_envs=None, workers=None, specialists=Vec::new(), full_references=Vec::new(), out=None, device="flex", threads=None, progress=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
    py: Python<'_>,
    checkpoints: Vec<PathBuf>,
    labels: Option<Vec<String>>,
    env: Option<String>,
    episodes: Option<usize>,
    steps: Option<usize>,
    seed: Option<u64>,
    p: Option<Vec<f64>>,
    noise: Option<Vec<f64>>,
    frozen: bool,
    stochastic: bool,
    score: &str,
    num_envs: Option<usize>,
    workers: Option<usize>,
    specialists: Vec<(String, Vec<PathBuf>)>,
    full_references: Vec<PathBuf>,
    out: Option<PathBuf>,
    device: &str,
    threads: Option<usize>,
    progress: bool,
) -> PyResult<(String, String)> {
    if checkpoints.is_empty() {
        return Err(PyValueError::new_err("checkpoints: give at least one run or checkpoint directory"));
    }
    let defaults = EvalConfig::default();
    let config = EvalConfig {
        episodes: episodes.unwrap_or(defaults.episodes),
        steps: steps.unwrap_or(defaults.steps),
        seed: seed.unwrap_or(defaults.seed),
        num_envs: num_envs.unwrap_or(defaults.num_envs),
        workers: workers.unwrap_or(defaults.workers),
        deterministic: !stochastic,
        score: score.parse::<Score>().map_err(|e| PyValueError::new_err(format!("score: {e}")))?,
        dropout_p: p.unwrap_or(defaults.dropout_p),
        noise_sigma: noise.unwrap_or(defaults.noise_sigma),
        frozen,
    };
    config.validate().map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    let device = device_args(device, threads)?;
    let agents = eval_agents(&checkpoints, labels, "checkpoints")?;
    let mut references = EvalReferences { specialists: Vec::new(), full: eval_agents(&full_references, None, "")? };
    for (modality, runs) in specialists {
        references.specialists.push((modality, eval_agents(&runs, None, "")?));
    }
    let out = out.unwrap_or_else(|| checkpoints[0].join("eval"));
    let report = without_gil(py, "evaluation", || {
        let report = evaluate_checkpoints(&agents, &references, env.as_deref(), &config, &device, progress)?;
        write_eval_report(&report, &out)?;
        Ok(report)
    })?;
    let json = serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok((json, out.to_string_lossy().into_owned()))
}

/// The results table of a folder of evaluated `<variant>-s<seed>` runs (see `m3ixup.report`), as
/// the `report` binary renders it, after copying the `collect` runs' result files there;
/// `generated_by` is its first line's command. Returns the
/// markdown, the chart's path and the run directories left out (no evaluation yet).
#[pyfunction]
#[pyo3(signature = (results, *, generated_by, readme=None, collect=Vec::new()))]
pub(crate) fn report(
    py: Python<'_>,
    results: PathBuf,
    generated_by: &str,
    readme: Option<PathBuf>,
    collect: Vec<PathBuf>,
) -> PyResult<(String, String, Vec<String>)> {
    let table = without_gil(py, "report", || {
        m3ixup::report::collect_runs(&results, &collect)?;
        let table = m3ixup::report::results_table(&results, generated_by)?;
        if let Some(readme) = &readme {
            m3ixup::report::replace_readme_section(readme, &results, &table.markdown)?;
        }
        Ok(table)
    })?;
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    Ok((table.markdown, path(&table.chart), table.skipped.iter().map(|p| path(p)).collect()))
}
