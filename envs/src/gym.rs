//! A Python Gymnasium environment as a Rust [`Env`] (feature `python`), selected as
//! `gym:<id>` (family [`FAMILY`] of the registry), for example `gym:Pendulum-v1`.
//!
//! **Modalities.** A `Dict` observation maps key by key (Box -> `f32[n]` flattened, uint8
//! image Box `HxWxC` or `HxW` -> `u8[C, H, W]`, Discrete -> one-hot `f32[n]`, MultiBinary ->
//! `f32[n]`); any other observation space becomes one modality, `proprio` (`pixels` when it is
//! a uint8 image). With `pixels = true` the environment is made with
//! `render_mode="rgb_array"` and every frame becomes the `pixels` modality, `u8[3, h, w]` (or
//! `u8[1, h, w]` with `grayscale = true`), area-averaged to `image_size` (nearest when
//! enlarging). `proprio = false` keeps the frames only. Box actions map to continuous actions
//! (bounds required), Discrete to discrete ones (Gymnasium's `start` offset applied); any other
//! space, or an observation space that cannot be mapped, is an error naming the environment.
//!
//! **Python.** This module holds all of this crate's Python: one helper module (`HELPER`, Python
//! source) does the conversions, so that each `reset` and `step` is a single call under the
//! GIL, returning one `bytes` per modality; the frame resize runs after the GIL is released.
//! Python exceptions become [`EnvError::Other`] naming the environment, the call and the
//! exception (type, message, innermost frame).
//!
//! **Finding Python.** The interpreter linked at build time (PyO3's choice: `PYO3_PYTHON`, or
//! `python3` on `PATH`) is embedded; its library directory is in the binaries' rpath (build.rs),
//! so no `LD_LIBRARY_PATH` is needed. At first use the user's Python is asked for its `sys.path`
//! (`M3IXUP_PYTHON` if set, else `$VIRTUAL_ENV/bin/python`, else `python3` on `PATH`), which
//! becomes the embedded `sys.path`: packages installed in a virtual environment are found
//! without `PYTHONPATH`. A version mismatch between the two is an error that says how to
//! rebuild.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyModule};
use serde::Deserialize;

use crate::registry::{EnvDefaults, EnvFactory, Registry};
use crate::{
    validate_action, Action, ActionSpace, DType, Env, EnvError, Info, ModalityData, ModalitySpec, Obs, ObsSpace, Step,
};

/// The registry family: `gym:<id>`.
pub const FAMILY: &str = "gym";

/// Parameters of a `gym:<id>` environment (TOML; the registry's wrapper keys `frame_stack`,
/// `max_episode_steps` and `sensor_dropout` apply as to every environment).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GymConfig {
    /// The Gymnasium id (`Pendulum-v1`, `module:Env-v0`); set by the name `gym:<id>`.
    pub id: String,
    /// Keep the environment's own observation (as `proprio` or, for a Dict, key by key).
    pub proprio: bool,
    /// Add a `pixels` modality from `render()` (the environment is made with
    /// `render_mode="rgb_array"`).
    pub pixels: bool,
    /// Size of `pixels`: `64` (square) or `[height, width]`.
    pub image_size: ImageSize,
    /// One grey channel (ITU-R 601 luma) instead of RGB.
    pub grayscale: bool,
    /// Extra keyword arguments for `gymnasium.make` (for example `{ g = 9.81 }`).
    pub kwargs: toml::Table,
}

impl Default for GymConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            proprio: true,
            pixels: false,
            image_size: ImageSize::Square(64),
            grayscale: false,
            kwargs: toml::Table::new(),
        }
    }
}

/// `image_size = 64` or `image_size = [48, 64]` (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ImageSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl ImageSize {
    fn height_width(self) -> (usize, usize) {
        match self {
            ImageSize::Square(s) => (s, s),
            ImageSize::HeightWidth([h, w]) => (h, w),
        }
    }
}

/// Registers the `gym` family: `gym:<id>` is Gymnasium's environment `<id>`.
pub fn register(registry: &mut Registry) {
    registry.register_family(FAMILY, EnvDefaults::default(), factory());
}

/// The registry factory of the `gym` family.
pub fn factory() -> EnvFactory {
    Arc::new(|params: &toml::Table| {
        let env_name = match params.get("id") {
            Some(toml::Value::String(id)) => format!("{FAMILY}:{id}"),
            _ => FAMILY.to_string(),
        };
        let text = toml::to_string(params).map_err(|e| EnvError::InvalidParam {
            env: env_name.clone(),
            param: "(parameters)".into(),
            reason: e.to_string(),
        })?;
        let config: GymConfig =
            toml::from_str(&text).map_err(|e| crate::registry::param_error(&env_name, &text, &e))?;
        Ok(Box::new(GymEnv::new(config)?) as Box<dyn Env>)
    })
}

/// Where a modality's data comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Entry `i` of the helper's observation layout.
    State(usize),
    /// The resized render frame.
    Pixels,
}

/// A Gymnasium environment behind the [`Env`] trait.
pub struct GymEnv {
    name: String,
    env: Py<PyAny>,
    helper: Py<PyModule>,
    /// The helper's description of the observation, passed back on each call.
    layout: Py<PyAny>,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    /// Per modality in the space's (sorted) order.
    sources: Vec<Source>,
    pixels: Option<(usize, usize, bool)>,
}

/// One modality as the helper describes it: name, kind (`box`, `image`, `discrete`), shape,
/// low, high.
type LayoutEntry = (String, String, Vec<usize>, Vec<f32>, Vec<f32>);

/// `(reward, terminated, truncated)` of a step.
type Outcome = (f64, bool, bool);

/// The helper's `reset`/`step` result: one `bytes` per modality, the frame (bytes, height,
/// width), the numeric info, and the step's outcome (None for a reset).
type HelperResult<'py> =
    (Vec<Bound<'py, PyBytes>>, Option<(Bound<'py, PyBytes>, usize, usize)>, HashMap<String, f64>, Option<Outcome>);

/// What one `reset` or `step` call returns, copied out of Python.
struct RawObs {
    state: Vec<Vec<u8>>,
    frame: Option<(Vec<u8>, usize, usize)>,
    info: HashMap<String, f64>,
}

impl GymEnv {
    /// Makes the Gymnasium environment `config.id` and maps its spaces.
    pub fn new(config: GymConfig) -> Result<Self, EnvError> {
        let name = format!("{FAMILY}:{}", config.id);
        let invalid =
            |param: &str, reason: String| EnvError::InvalidParam { env: name.clone(), param: param.into(), reason };
        if config.id.is_empty() {
            return Err(invalid("id", "missing: select `gym:<id>` or set `id = \"Pendulum-v1\"`".into()));
        }
        let (height, width) = config.image_size.height_width();
        if config.pixels && (height == 0 || width == 0 || height > 4096 || width > 4096) {
            return Err(invalid("image_size", format!("{height}x{width}: each side must be in 1..=4096")));
        }
        if !config.proprio && !config.pixels {
            return Err(invalid("proprio", "with `pixels = false` too, nothing would be observed".into()));
        }
        ensure_python(&name)?;
        let made = Python::attach(|py| -> PyResult<_> {
            let helper = helper(py)?;
            let kwargs = PyDict::new(py);
            for (key, value) in &config.kwargs {
                kwargs.set_item(key, toml_to_py(py, value)?)?;
            }
            let env = helper.call_method1("make", (&config.id, kwargs, config.pixels))?;
            let layout = helper.call_method1("layout", (&env, config.proprio))?;
            let entries: Vec<LayoutEntry> = helper.call_method1("layout_specs", (&layout,))?.extract()?;
            let action: (String, usize, Vec<f32>, Vec<f32>) =
                helper.call_method1("action_layout", (&env,))?.extract()?;
            Ok((helper.unbind(), env.unbind(), layout.unbind(), entries, action))
        });
        let (helper, env, layout, entries, action) = made.map_err(|e| python_error(&name, "gymnasium.make", e))?;
        let action_space = match action.0.as_str() {
            "discrete" => ActionSpace::Discrete(action.1),
            _ => ActionSpace::Box { low: action.2, high: action.3 },
        };
        action_space.validate().map_err(|e| EnvError::InvalidSpace(format!("`{name}` action space: {e}")))?;
        let mut modalities: Vec<(String, ModalitySpec, Source)> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (key, kind, shape, low, high))| {
                let dtype = if kind == "image" { DType::U8 } else { DType::F32 };
                (key, ModalitySpec { shape, dtype, low, high }, Source::State(i))
            })
            .collect();
        if config.pixels {
            let channels = if config.grayscale { 1 } else { 3 };
            modalities.push((
                "pixels".into(),
                ModalitySpec::uniform(&[channels, height, width], DType::U8, 0.0, 255.0),
                Source::Pixels,
            ));
        }
        let obs_space = ObsSpace::new(modalities.iter().map(|(n, s, _)| (n.clone(), s.clone())))
            .map_err(|e| EnvError::InvalidSpace(format!("`{name}` observation space: {e}")))?;
        let sources = obs_space
            .names()
            .map(|n| modalities.iter().find(|(m, _, _)| m == n).expect("every modality has a source").2)
            .collect();
        Ok(Self {
            name,
            env,
            helper,
            layout,
            obs_space,
            action_space,
            sources,
            pixels: config.pixels.then_some((height, width, config.grayscale)),
        })
    }

    /// One call into the helper, under the GIL only while Python runs and its bytes are copied.
    fn call(
        &self,
        what: &str,
        args: impl FnOnce(Python<'_>) -> PyResult<Bound<'_, PyAny>>,
    ) -> Result<(RawObs, Option<Outcome>), EnvError> {
        Python::attach(|py| -> PyResult<_> {
            let result = args(py)?;
            let (state, frame, info, outcome): HelperResult<'_> = result.extract()?;
            let raw = RawObs {
                state: state.iter().map(|b| b.as_bytes().to_vec()).collect(),
                frame: frame.map(|(b, h, w)| (b.as_bytes().to_vec(), h, w)),
                info,
            };
            Ok((raw, outcome))
        })
        .map_err(|e| python_error(&self.name, what, e))
    }

    /// Builds the observation from the helper's bytes (resizing the frame) and checks it.
    fn observation(&self, raw: RawObs) -> Result<(Obs, Info), EnvError> {
        let bad = |message: String| EnvError::Other { env: self.name.clone(), message };
        let mut data = Vec::with_capacity(self.sources.len());
        for ((modality, spec), source) in self.obs_space.iter().zip(&self.sources) {
            let item = match *source {
                Source::State(i) => {
                    let bytes = &raw.state[i];
                    match spec.dtype {
                        DType::U8 => ModalityData::U8(bytes.clone()),
                        DType::F32 => ModalityData::F32(
                            bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(),
                        ),
                    }
                }
                Source::Pixels => {
                    let (frame, h, w) = raw.frame.as_ref().ok_or_else(|| bad("render() gave no frame".into()))?;
                    let (out_h, out_w, grey) = self.pixels.expect("a pixels source implies a pixels config");
                    if frame.len() != h * w * 3 {
                        return Err(bad(format!("render() gave {} bytes for a {h}x{w}x3 frame", frame.len())));
                    }
                    ModalityData::U8(resize_rgb(frame, *h, *w, out_h, out_w, grey))
                }
            };
            if item.len() != spec.numel() {
                return Err(bad(format!(
                    "observation `{modality}` has {} values, its space declares shape {:?}",
                    item.len(),
                    spec.shape
                )));
            }
            data.push(item);
        }
        let info = raw.info.into_iter().collect();
        Ok((Obs::new(data), info))
    }
}

impl Env for GymEnv {
    fn name(&self) -> &str {
        &self.name
    }

    fn observation_space(&self) -> &ObsSpace {
        &self.obs_space
    }

    fn action_space(&self) -> &ActionSpace {
        &self.action_space
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        let (raw, _) = self.call("reset", |py| {
            self.helper
                .bind(py)
                .call_method1("reset", (self.env.bind(py), seed, self.layout.bind(py), self.pixels.is_some()))
        })?;
        self.observation(raw)
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        validate_action(&self.name, &self.action_space, action)?;
        let (raw, outcome) = self.call("step", |py| {
            let action = match action {
                Action::Continuous(values) => values.into_pyobject(py)?.into_any(),
                Action::Discrete(a) => a.into_pyobject(py)?.into_any(),
            };
            self.helper
                .bind(py)
                .call_method1("step", (self.env.bind(py), action, self.layout.bind(py), self.pixels.is_some()))
        })?;
        let (reward, terminated, truncated) = outcome
            .ok_or_else(|| EnvError::Other { env: self.name.clone(), message: "step returned no outcome".into() })?;
        let (obs, info) = self.observation(raw)?;
        if !reward.is_finite() {
            return Err(EnvError::Other {
                env: self.name.clone(),
                message: format!("step returned the reward {reward}"),
            });
        }
        Ok(Step { obs, reward, terminated, truncated, info })
    }
}

impl Drop for GymEnv {
    fn drop(&mut self) {
        // `close` frees renderer windows and files; nothing to report if it fails.
        let _ = Python::try_attach(|py| self.env.bind(py).call_method0("close").map(drop));
    }
}

/// Area-averages (nearest when enlarging) an `h x w x 3` RGB frame to `[C, out_h, out_w]`,
/// with `C = 1` (ITU-R 601 luma) when `grey`, else 3.
pub fn resize_rgb(frame: &[u8], h: usize, w: usize, out_h: usize, out_w: usize, grey: bool) -> Vec<u8> {
    let channels = if grey { 1 } else { 3 };
    let mut out = vec![0u8; channels * out_h * out_w];
    // Source rows [y0, y1) and columns [x0, x1) of each output pixel; at least one of each.
    let span = |o: usize, n_out: usize, n_in: usize| {
        let a = o * n_in / n_out;
        let b = ((o + 1) * n_in / n_out).max(a + 1).min(n_in);
        (a, b)
    };
    let cols: Vec<(usize, usize)> = (0..out_w).map(|x| span(x, out_w, w)).collect();
    for oy in 0..out_h {
        let (y0, y1) = span(oy, out_h, h);
        for (ox, &(x0, x1)) in cols.iter().enumerate() {
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &frame[(y * w + x0) * 3..(y * w + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += px[0] as u32;
                    sum[1] += px[1] as u32;
                    sum[2] += px[2] as u32;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let mean = sum.map(|s| (s + n / 2) / n);
            let at = oy * out_w + ox;
            if grey {
                // Integer luma, 0.299 R + 0.587 G + 0.114 B, rounded.
                out[at] = ((299 * mean[0] + 587 * mean[1] + 114 * mean[2] + 500) / 1000) as u8;
            } else {
                for c in 0..3 {
                    out[c * out_h * out_w + at] = mean[c] as u8;
                }
            }
        }
    }
    out
}

/// Turns a Python exception into an error naming the environment, the call and the cause.
fn python_error(env: &str, what: &str, err: PyErr) -> EnvError {
    let message = Python::attach(|py| {
        let kind = err.get_type(py).qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
        let text = err.value(py).str().map(|s| s.to_string()).unwrap_or_default();
        if kind == "UnmappableSpace" {
            return format!("cannot be used: {text}");
        }
        if kind == "UnknownId" {
            return format!("unknown Gymnasium id: {text}");
        }
        // The innermost frame says where in the Python code it happened.
        let at = err
            .traceback(py)
            .and_then(|tb| tb.format().ok())
            .and_then(|t| t.lines().rev().find(|l| l.trim_start().starts_with("File ")).map(|l| l.trim().to_string()));
        match at {
            Some(at) => format!("{what} raised {kind}: {text} ({at})"),
            None => format!("{what} raised {kind}: {text}"),
        }
    });
    EnvError::Other { env: env.to_string(), message }
}

/// A TOML value as a Python object (for `gymnasium.make` keyword arguments).
fn toml_to_py<'py>(py: Python<'py>, value: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        toml::Value::String(s) => s.into_pyobject(py)?.into_any(),
        toml::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        toml::Value::Float(f) => f.into_pyobject(py)?.into_any(),
        toml::Value::Boolean(b) => b.into_pyobject(py)?.to_owned().into_any(),
        toml::Value::Datetime(d) => d.to_string().into_pyobject(py)?.into_any(),
        toml::Value::Array(items) => {
            let list = pyo3::types::PyList::empty(py);
            for item in items {
                list.append(toml_to_py(py, item)?)?;
            }
            list.into_any()
        }
        toml::Value::Table(table) => {
            let dict = PyDict::new(py);
            for (k, v) in table {
                dict.set_item(k, toml_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// The helper module, compiled once per process.
fn helper(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    static HELPER_MODULE: OnceLock<Py<PyModule>> = OnceLock::new();
    if let Some(m) = HELPER_MODULE.get() {
        return Ok(m.bind(py).clone());
    }
    let module = PyModule::from_code(py, HELPER, c"m3ixup_gym_helper.py", c"m3ixup_gym_helper")?;
    Ok(HELPER_MODULE.get_or_init(|| module.unbind()).bind(py).clone())
}

/// Runs Python source in the embedded interpreter's `__main__` (after it has adopted the user's
/// `sys.path`): for example to define and `gymnasium.register` an environment that `gym:<id>`
/// then selects. Environments in an importable module need no call: `gym:module:Env-v0`
/// imports `module` first (Gymnasium's id syntax).
pub fn exec(code: &str) -> Result<(), EnvError> {
    ensure_python("python")?;
    let code = std::ffi::CString::new(code)
        .map_err(|_| EnvError::Other { env: "python".into(), message: "the code contains a NUL byte".into() })?;
    Python::attach(|py| py.run(&code, None, None)).map_err(|e| python_error("python", "exec", e))
}

/// Makes the embedded interpreter see the user's Python packages (once per process).
fn ensure_python(env: &str) -> Result<(), EnvError> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(adopt_user_python).clone().map_err(|message| EnvError::Other { env: env.to_string(), message })
}

/// The user's Python: `M3IXUP_PYTHON`, else `$VIRTUAL_ENV/bin/python`, else `python3` on `PATH`.
fn user_python() -> String {
    if let Some(p) = std::env::var_os("M3IXUP_PYTHON") {
        return p.to_string_lossy().into_owned();
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let p = std::path::Path::new(&venv).join("bin").join("python");
        if p.exists() {
            return p.to_string_lossy().into_owned();
        }
    }
    "python3".into()
}

fn adopt_user_python() -> Result<(), String> {
    let python = user_python();
    let probe = Command::new(&python)
        .args(["-c", "import sys; print(sys.version_info[0], sys.version_info[1]); print('\\n'.join(sys.path))"])
        .output();
    Python::attach(|py| -> Result<(), String> {
        let sys = py.import("sys").map_err(|e| e.to_string())?;
        let embedded: (u8, u8) = sys
            .getattr("version_info")
            .and_then(|v| Ok((v.get_item(0)?.extract()?, v.get_item(1)?.extract()?)))
            .map_err(|e| e.to_string())?;
        // Some packages read sys.argv, which an embedded interpreter lacks.
        if !sys.hasattr("argv").unwrap_or(false) {
            let _ = sys.setattr("argv", vec!["m3ixup"]);
        }
        let out = match probe {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            // No usable Python on PATH: keep the embedded interpreter's own paths.
            _ => return Ok(()),
        };
        let mut lines = out.lines();
        let version = lines.next().unwrap_or_default().to_string();
        let theirs = format!("{} {}", embedded.0, embedded.1);
        if version.trim() != theirs {
            return Err(format!(
                "this binary embeds Python {}.{} but `{python}` is Python {}; rebuild with that Python \
                 (PYO3_PYTHON=$(which {python}) cargo build --features python ...) or point M3IXUP_PYTHON at a {}.{} interpreter",
                embedded.0,
                embedded.1,
                version.trim().replace(' ', "."),
                embedded.0,
                embedded.1,
            ));
        }
        let user_path: Vec<String> = lines.filter(|l| !l.is_empty()).map(String::from).collect();
        let current: Vec<String> = sys.getattr("path").and_then(|p| p.extract()).map_err(|e| e.to_string())?;
        let mut path = user_path.clone();
        path.extend(current.into_iter().filter(|p| !p.is_empty() && !user_path.contains(p)));
        sys.setattr("path", path).map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The Python side of the bridge: space mapping and per-call conversions to `bytes`.
const HELPER: &std::ffi::CStr = cr#"
import os
import threading

import numpy as np
import gymnasium as gym
from gymnasium import spaces


class UnmappableSpace(Exception):
    pass


class UnknownId(Exception):
    pass


_make_lock = threading.Lock()


def make(env_id, kwargs, render):
    kwargs = dict(kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
        # Off-screen frames: SDL (pygame) needs no display, sound device or XDG_RUNTIME_DIR.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    # One at a time, with a first frame drawn: renderers import lazily (pygame.surfarray), and
    # threads that do so at once can see a half-initialised module.
    with _make_lock:
        try:
            env = gym.make(env_id, **kwargs)
        except gym.error.UnregisteredEnv as e:
            raise UnknownId(f"`{env_id}`: {e}") from e
        if render:
            env.reset()
            _frame(env)
    return env


def _entry(name, key, space, where):
    # (modality name, dict key or None, kind, modality shape, low, high, discrete start)
    if isinstance(space, spaces.Box):
        if space.dtype == np.uint8 and len(space.shape) in (2, 3):
            low, high = space.low, space.high
            if low.ndim == 2:
                low, high = low[None], high[None]
            else:
                low, high = np.moveaxis(low, -1, 0), np.moveaxis(high, -1, 0)
            return (name if key is not None else "pixels", key, "image", list(low.shape),
                    low.ravel().astype(np.float32).tolist(), high.ravel().astype(np.float32).tolist(), 0)
        low = np.asarray(space.low, dtype=np.float32).ravel()
        high = np.asarray(space.high, dtype=np.float32).ravel()
        return (name, key, "box", [int(low.size)], low.tolist(), high.tolist(), 0)
    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        return (name, key, "discrete", [n], [0.0] * n, [1.0] * n, int(space.start))
    if isinstance(space, spaces.MultiBinary):
        n = int(np.prod(space.shape))
        return (name, key, "box", [n], [0.0] * n, [1.0] * n, 0)
    raise UnmappableSpace(
        f"{where} {space} cannot be mapped to a modality (supported: Box, Discrete, MultiBinary, "
        "and a Dict of those)")


def layout(env, proprio):
    space = env.observation_space
    if not proprio:
        return []
    if isinstance(space, spaces.Dict):
        return [_entry(str(k), k, s, f"observation key {k!r}:") for k, s in space.spaces.items()]
    return [_entry("proprio", None, space, "observation space")]


def layout_specs(entries):
    return [(e[0], e[2], e[3], e[4], e[5]) for e in entries]


def action_layout(env):
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return ("discrete", int(space.n), [], [])
    if isinstance(space, spaces.Box):
        low = np.asarray(space.low, dtype=np.float64).ravel()
        high = np.asarray(space.high, dtype=np.float64).ravel()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise UnmappableSpace(f"action space {space}: unbounded Box actions cannot be mapped")
        return ("box", 0, low.astype(np.float32).tolist(), high.astype(np.float32).tolist())
    raise UnmappableSpace(f"action space {space} cannot be mapped (supported: Box, Discrete)")


def _encode(obs, entries):
    out = []
    for name, key, kind, shape, _, _, start in entries:
        x = obs if key is None else obs[key]
        if kind == "box":
            out.append(np.asarray(x, dtype=np.float32).tobytes())
        elif kind == "image":
            a = np.asarray(x, dtype=np.uint8)
            a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
            out.append(np.ascontiguousarray(a).tobytes())
        else:
            v = np.zeros(shape[0], dtype=np.float32)
            v[int(x) - start] = 1.0
            out.append(v.tobytes())
    return out


# Frames are drawn one at a time across threads, the first one at `make` included: pygame
# (pygame-ce 2.5 with Gymnasium 1.4) releases the GIL while it draws and then corrupts frames
# drawn at once in other threads.
_render_lock = threading.Lock()


def _frame(env):
    with _render_lock:
        f = env.render()
    if f is None:
        raise RuntimeError("render() returned None although render_mode='rgb_array'")
    f = np.asarray(f)
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4):
        raise RuntimeError(f"render() returned {f.dtype} {f.shape}, expected uint8 HxWx3")
    f = np.ascontiguousarray(f[..., :3])
    return (f.tobytes(), int(f.shape[0]), int(f.shape[1]))


def _numbers(info):
    return {str(k): float(v) for k, v in info.items()
            if isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating))}


def reset(env, seed, entries, render):
    obs, info = env.reset(seed=seed)
    return (_encode(obs, entries), _frame(env) if render else None, _numbers(info), None)


def step(env, action, entries, render):
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        action = int(action) + int(space.start)
    else:
        action = np.asarray(action, dtype=space.dtype).reshape(space.shape)
    obs, reward, terminated, truncated, info = env.step(action)
    return (_encode(obs, entries), _frame(env) if render else None, _numbers(info),
            (float(reward), bool(terminated), bool(truncated)))
"#;

#[cfg(test)]
mod tests {
    use super::resize_rgb;

    #[test]
    fn resize_averages_areas_and_converts_to_grey() {
        // 2x4 RGB: left half pure red, right half pure blue.
        let mut frame = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                frame.extend_from_slice(if x < 2 { &[255, 0, 0] } else { &[0, 0, 255] });
            }
        }
        // To 1x2: each output pixel averages one half.
        assert_eq!(resize_rgb(&frame, 2, 4, 1, 2, false), vec![255, 0, 0, 0, 0, 255]);
        // To 1x1: the mean, 127.5 rounded up, per channel.
        assert_eq!(resize_rgb(&frame, 2, 4, 1, 1, false), vec![128, 0, 128]);
        // Grey: 0.299 * 255 and 0.114 * 255, rounded.
        assert_eq!(resize_rgb(&frame, 2, 4, 1, 2, true), vec![76, 29]);
        // Enlarging repeats pixels (nearest).
        assert_eq!(resize_rgb(&frame, 2, 4, 4, 8, true)[..8], [76, 76, 76, 76, 29, 29, 29, 29]);
    }
}
