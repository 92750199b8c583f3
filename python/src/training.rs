//! `m3ixup._native.train`: the Rust trainers in this process, for `m3ixup.train`
//! (python/m3ixup/training.py). The run is the `train` binary's (the same
//! [`TrainRun`]: run directory, metrics, checkpoints, resume, learning curve), on the device
//! named, with the GIL released while it trains; each metrics row goes to `on_update`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use m3ixup::agents::infra::harness::{OnRow, Row, TrainOptions, TrainSummary};
use m3ixup::config::Source;
use m3ixup::device::{DeviceArgs, DeviceSpec};
use m3ixup::envs::error::panic_message;
use m3ixup::jobs::{TrainConfig, TrainRun};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList};

use crate::params_table;

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
    let device_spec: DeviceSpec = device.parse().map_err(|e| PyValueError::new_err(format!("device: {e}")))?;
    let device = DeviceArgs { device: device_spec, threads, ..DeviceArgs::default() };
    device.check().map_err(value_error)?;
    let input = config_input(config)?;
    let source = match &input {
        ConfigInput::File(path) => Source::File(path),
        ConfigInput::Text(text) => Source::Text(text),
    };
    let config = TrainConfig::load_from(source, &overrides).map_err(value_error)?;
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
    let result = py.detach(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let summary = job.train(&device, &options)?;
            job.write_learning_curve()?;
            Ok::<TrainSummary, anyhow::Error>(summary)
        }))
    });
    if let Some(e) = raised.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let summary = match result {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => return Err(PyRuntimeError::new_err(format!("{e:#}"))),
        Err(panic) => return Err(PyRuntimeError::new_err(format!("training panicked: {}", panic_message(&*panic)))),
    };
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
