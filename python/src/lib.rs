//! `m3ixup._native`: the registered Rust environments and the Rust vector environment, for the
//! Gymnasium classes of the `m3ixup` Python package (python/m3ixup/__init__.py).
//!
//! Observations come back as numpy arrays: one array per modality, built from the Rust buffer
//! with one copy of the whole buffer (for the vector environment, straight from its contiguous
//! `[num_envs, ..shape]` batch buffer), never element by element in Python. Stepping releases
//! the GIL. Every failure is a Python exception: bad input (`InvalidAction`, `InvalidParam`,
//! `UnknownEnv`, ...) is `ValueError`, anything else `RuntimeError`, both with the Rust message;
//! a panic inside an environment is caught and raised as `RuntimeError` too. `train` runs the
//! Rust trainers in this process (module `training`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

mod training;

use m3ixup_envs::error::panic_message;
use m3ixup_envs::{
    make, max_episode_steps, registered_names, Action, ActionSpace, BatchActions, BatchObs, DType, Env as RustEnv,
    EnvError, Info, ModalityData, Obs, ObsSpace, VecEnv as RustVecEnv, VecEnvConfig,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// An `EnvError` as the Python exception that fits it.
fn to_py(e: EnvError) -> PyErr {
    match e {
        EnvError::InvalidAction { .. }
        | EnvError::InvalidSpace(_)
        | EnvError::UnknownEnv { .. }
        | EnvError::InvalidParam { .. }
        | EnvError::UnknownModality { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Runs `f`, turning a panic into a `RuntimeError` naming `what`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, EnvError>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(to_py),
        Err(panic) => Err(PyRuntimeError::new_err(format!("{what} panicked: {}", panic_message(&*panic)))),
    }
}

fn locked<'a, T>(m: &'a Mutex<T>) -> PyResult<MutexGuard<'a, T>> {
    m.lock().map_err(|_| PyRuntimeError::new_err("the environment was poisoned by a panic; make a new one"))
}

/// A Python value (dict of keyword arguments) as TOML parameters for the registry.
fn py_to_toml(value: &Bound<'_, PyAny>, key: &str) -> PyResult<toml::Value> {
    if value.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(value.extract()?));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(toml::Value::Integer(value.extract()?));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(value.extract()?));
    }
    if value.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(value.extract()?));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        return Ok(toml::Value::Table(params_table(Some(dict))?));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = value.extract()?;
        return Ok(toml::Value::Array(items.iter().map(|v| py_to_toml(v, key)).collect::<PyResult<_>>()?));
    }
    // numpy scalars and anything else with a numeric meaning.
    if let Ok(v) = value.call_method0("item") {
        if !v.is(value) {
            return py_to_toml(&v, key);
        }
    }
    Err(PyValueError::new_err(format!(
        "parameter `{key}`: {} cannot be a parameter (use bool, int, float, str, list or dict)",
        value.get_type().name()?
    )))
}

fn params_table(params: Option<&Bound<'_, PyDict>>) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    if let Some(params) = params {
        for (k, v) in params.iter() {
            let key: String = k.extract()?;
            let value = py_to_toml(&v, &key)?;
            table.insert(key, value);
        }
    }
    Ok(table)
}

/// `[(name, shape, dtype, low, high)]` in the space's order, bounds as flat float32 arrays.
fn space_spec<'py>(py: Python<'py>, space: &ObsSpace) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, spec) in space.iter() {
        let dtype = match spec.dtype {
            DType::U8 => "uint8",
            DType::F32 => "float32",
        };
        let item = (
            name,
            PyTuple::new(py, &spec.shape)?,
            dtype,
            PyArray1::from_slice(py, &spec.low),
            PyArray1::from_slice(py, &spec.high),
        );
        list.append(item)?;
    }
    Ok(list)
}

fn action_spec<'py>(py: Python<'py>, space: &ActionSpace) -> PyResult<Bound<'py, PyAny>> {
    Ok(match space {
        ActionSpace::Box { low, high } => {
            ("box", PyArray1::from_slice(py, low), PyArray1::from_slice(py, high)).into_pyobject(py)?.into_any()
        }
        ActionSpace::Discrete(n) => ("discrete", *n).into_pyobject(py)?.into_any(),
    })
}

/// One flat buffer as a numpy array of `shape` (one memcpy).
fn array<'py>(py: Python<'py>, data: &ModalityData, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    Ok(match data {
        ModalityData::U8(v) => PyArray1::from_slice(py, v).reshape(shape)?.into_any(),
        ModalityData::F32(v) => PyArray1::from_slice(py, v).reshape(shape)?.into_any(),
    })
}

/// One observation as `{modality: array}`.
fn obs_dict<'py>(py: Python<'py>, space: &ObsSpace, obs: &Obs) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for ((name, spec), data) in space.iter().zip(&obs.data) {
        dict.set_item(name, array(py, data, &spec.shape)?)?;
    }
    Ok(dict)
}

fn info_dict<'py>(py: Python<'py>, info: &Info, present: &[bool]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in info {
        dict.set_item(k, *v)?;
    }
    dict.set_item("present", PyArray1::from_slice(py, present))?;
    Ok(dict)
}

/// Names of the registered Rust environments.
#[pyfunction(name = "registered_names")]
fn names() -> Vec<String> {
    registered_names()
}

/// The step at which `name` with `params` truncates its episodes (None: never).
#[pyfunction(name = "max_episode_steps")]
#[pyo3(signature = (name, params=None))]
fn episode_limit(name: &str, params: Option<&Bound<'_, PyDict>>) -> PyResult<Option<usize>> {
    let params = params_table(params)?;
    guarded(name, || max_episode_steps(name, &params))
}

/// One registered Rust environment: `Env(name, params)`, params as for `make` in Rust.
#[pyclass(name = "Env", module = "m3ixup._native")]
struct Env {
    env: Mutex<Box<dyn RustEnv>>,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    /// The last observation, for `frame` (render).
    last: Mutex<Option<Obs>>,
}

#[pymethods]
impl Env {
    #[new]
    #[pyo3(signature = (name, params=None))]
    fn new(name: &str, params: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let params = params_table(params)?;
        let env = guarded(name, || make(name, &params))?;
        Ok(Self {
            obs_space: env.observation_space().clone(),
            action_space: env.action_space().clone(),
            env: Mutex::new(env),
            last: Mutex::new(None),
        })
    }

    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(locked(&self.env)?.name().to_string())
    }

    /// `[(name, shape, dtype, low, high)]` of the observation modalities, sorted by name.
    fn observation_spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        space_spec(py, &self.obs_space)
    }

    /// `("box", low, high)` or `("discrete", n)`.
    fn action_spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        action_spec(py, &self.action_space)
    }

    /// `(obs, info)`; `info["present"]` holds one presence flag per modality.
    #[pyo3(signature = (seed=None))]
    fn reset<'py>(&self, py: Python<'py>, seed: Option<u64>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let mut guard = locked(&self.env)?;
        let env: &mut dyn RustEnv = &mut **guard;
        let (obs, info) = py.detach(move || guarded("reset", || env.reset(seed)))?;
        let result = (obs_dict(py, &self.obs_space, &obs)?, info_dict(py, &info, &obs.present)?);
        *locked(&self.last)? = Some(obs);
        Ok(result)
    }

    /// `(obs, reward, terminated, truncated, info)`. `action`: a float32 array of the Box's
    /// dimension, or an int for Discrete.
    fn step<'py>(&self, py: Python<'py>, action: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let action = match &self.action_space {
            ActionSpace::Box { .. } => {
                let a: PyReadonlyArrayDyn<'py, f32> = action.extract()?;
                Action::Continuous(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
            }
            ActionSpace::Discrete(_) => Action::Discrete(action.extract()?),
        };
        let mut guard = locked(&self.env)?;
        let env: &mut dyn RustEnv = &mut **guard;
        let step = py.detach(move || guarded("step", || env.step(&action)))?;
        let result = (
            obs_dict(py, &self.obs_space, &step.obs)?,
            step.reward,
            step.terminated,
            step.truncated,
            info_dict(py, &step.info, &step.obs.present)?,
        )
            .into_pyobject(py)?;
        *locked(&self.last)? = Some(step.obs);
        Ok(result)
    }

    /// The last observation's modality `name` as an array, or None before the first reset.
    fn last_modality<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let m = self.obs_space.require(name).map_err(to_py)?;
        let last = locked(&self.last)?;
        last.as_ref().map(|obs| array(py, &obs.data[m], &self.obs_space.spec(m).shape)).transpose()
    }
}

/// The Rust vector environment: `VecEnv(name, params, num_envs, workers, seed)`.
#[pyclass(name = "VecEnv", module = "m3ixup._native")]
struct VecEnv {
    venv: Mutex<RustVecEnv>,
    obs_space: ObsSpace,
    action_space: ActionSpace,
    num_envs: usize,
}

/// Rejects a batch with an action that does not fit, naming the sub-environment, before it
/// reaches the vector environment (where a sub-environment's error would poison it).
fn check_batch(space: &ActionSpace, actions: &BatchActions, n: usize) -> PyResult<()> {
    let per_env = match space {
        ActionSpace::Box { low, .. } => low.len(),
        ActionSpace::Discrete(_) => 1,
    };
    if actions.len() != n * per_env {
        return Err(PyValueError::new_err(format!(
            "expected {n} actions of {per_env} values ({} in all), got {}",
            n * per_env,
            actions.len()
        )));
    }
    for i in 0..n {
        let action = match actions {
            BatchActions::Continuous(v) => Action::Continuous(v[i * per_env..(i + 1) * per_env].to_vec()),
            BatchActions::Discrete(v) => Action::Discrete(v[i]),
        };
        space
            .check(&action)
            .map_err(|reason| PyValueError::new_err(format!("sub-environment {i} rejected the action: {reason}")))?;
    }
    Ok(())
}

/// A batch as `{modality: array [num_envs, ..shape]}` and presence `[num_envs, modalities]`.
fn batch_dict<'py>(
    py: Python<'py>,
    space: &ObsSpace,
    batch: &BatchObs,
    n: usize,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let dict = PyDict::new(py);
    for (m, (name, spec)) in space.iter().enumerate() {
        let mut shape = vec![n];
        shape.extend_from_slice(&spec.shape);
        dict.set_item(name, array(py, batch.modality(m), &shape)?)?;
    }
    let present = PyArray1::from_slice(py, &batch.present).reshape([n, space.len()])?.into_any();
    Ok((dict, present))
}

#[pymethods]
impl VecEnv {
    #[new]
    #[pyo3(signature = (name, params=None, num_envs=1, workers=0, seed=0))]
    fn new(
        name: &str,
        params: Option<&Bound<'_, PyDict>>,
        num_envs: usize,
        workers: usize,
        seed: u64,
    ) -> PyResult<Self> {
        let params = params_table(params)?;
        let config = VecEnvConfig { num_envs, workers, seed, ..VecEnvConfig::default() };
        let venv = guarded(name, || RustVecEnv::new(config, |_| make(name, &params)))?;
        Ok(Self {
            obs_space: venv.observation_space().clone(),
            action_space: venv.action_space().clone(),
            num_envs,
            venv: Mutex::new(venv),
        })
    }

    fn observation_spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        space_spec(py, &self.obs_space)
    }

    fn action_spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        action_spec(py, &self.action_space)
    }

    /// `(obs, present)`: sub-environment `i` is seeded `seed + i`.
    #[pyo3(signature = (seed=None))]
    fn reset<'py>(&self, py: Python<'py>, seed: Option<u64>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
        let mut guard = locked(&self.venv)?;
        let venv: &mut RustVecEnv = &mut guard;
        // The batch stays in the vector environment's buffers; numpy copies each one once.
        let batch = py.detach(move || guarded("reset", || venv.reset(seed)))?;
        batch_dict(py, &self.obs_space, batch, self.num_envs)
    }

    /// `(obs, present)`: sub-environment `i` is seeded `seeds[i]` (None: it continues its
    /// stream); one seed per sub-environment.
    fn reset_each<'py>(
        &self,
        py: Python<'py>,
        seeds: Vec<Option<u64>>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
        let mut guard = locked(&self.venv)?;
        let venv: &mut RustVecEnv = &mut guard;
        let batch = py.detach(move || guarded("reset", || venv.reset_each(&seeds)))?;
        batch_dict(py, &self.obs_space, batch, self.num_envs)
    }

    /// `(obs, rewards, terminated, truncated, infos)` with same-step autoreset: for a finished
    /// sub-environment `obs` is the next episode's first observation, and
    /// `infos["final_obs"][i]` (with `infos["_final_obs"][i]` set) the finishing one. Every info
    /// key comes with its `_key` mask (Gymnasium's vector info layout); `infos["present"]` is
    /// `[num_envs, modalities]`. `actions`: float32 `[num_envs, dim]` or int64 `[num_envs]`.
    fn step<'py>(&self, py: Python<'py>, actions: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let actions = match &self.action_space {
            ActionSpace::Box { .. } => {
                let a: PyReadonlyArrayDyn<'py, f32> = actions.extract()?;
                BatchActions::Continuous(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
            }
            ActionSpace::Discrete(_) => {
                let a: PyReadonlyArrayDyn<'py, i64> = actions.extract()?;
                BatchActions::Discrete(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
            }
        };
        let n = self.num_envs;
        check_batch(&self.action_space, &actions, n)?;
        let mut guard = locked(&self.venv)?;
        let venv: &mut RustVecEnv = &mut guard;
        let step = py.detach(move || guarded("step", || venv.step(&actions)))?;
        let (obs, present) = batch_dict(py, &self.obs_space, &step.obs, n)?;
        let infos = PyDict::new(py);
        // Per key: values (0 where absent) and the mask of the sub-environments that have it.
        let mut keys: Vec<&String> = step.infos.iter().flat_map(|i| i.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let values: Vec<f64> = step.infos.iter().map(|i| i.get(key).copied().unwrap_or(0.0)).collect();
            let mask: Vec<bool> = step.infos.iter().map(|i| i.contains_key(key)).collect();
            infos.set_item(key, PyArray1::from_vec(py, values))?;
            infos.set_item(format!("_{key}"), PyArray1::from_vec(py, mask))?;
        }
        infos.set_item("present", present)?;
        infos.set_item("_present", PyArray1::from_vec(py, vec![true; n]))?;
        if step.final_obs.iter().any(Option::is_some) {
            let finals = PyList::empty(py);
            for f in &step.final_obs {
                match f {
                    Some(obs) => finals.append(obs_dict(py, &self.obs_space, obs)?)?,
                    None => finals.append(py.None())?,
                }
            }
            let np = py.import("numpy")?;
            // An object array, as gymnasium's SyncVectorEnv gives.
            let kwargs = PyDict::new(py);
            kwargs.set_item("dtype", "object")?;
            let objects = np.call_method("empty", (n,), Some(&kwargs))?;
            for (i, item) in finals.iter().enumerate() {
                objects.set_item(i, item)?;
            }
            infos.set_item("final_obs", objects)?;
            infos
                .set_item("_final_obs", PyArray1::from_vec(py, step.final_obs.iter().map(Option::is_some).collect()))?;
        }
        (
            obs,
            PyArray1::from_slice(py, &step.rewards),
            PyArray1::from_slice(py, &step.terminated),
            PyArray1::from_slice(py, &step.truncated),
            infos,
        )
            .into_pyobject(py)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(names, m)?)?;
    m.add_function(wrap_pyfunction!(episode_limit, m)?)?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add_function(wrap_pyfunction!(training::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(training::report, m)?)?;
    m.add_function(wrap_pyfunction!(training::config_toml, m)?)?;
    m.add_class::<Env>()?;
    m.add_class::<VecEnv>()?;
    Ok(())
}
