//! Sensors that fail without saying so: the modality stays marked present, but its data is
//! noisy ([`SensorNoise`]) or stale ([`StaleSensor`]). Unlike [`SensorDropout`](super::SensorDropout),
//! the agent cannot fall back on the other sensors by reading the presence mask, which is what
//! a robustness evaluation should also measure.

use crate::state::{save_wrapper, EnvRng, EnvState};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::{Action, ActionSpace, Env, EnvError, Info, ModalityData, Obs, ObsSpace, Step};

/// Mixed into the reset seed so the noise stream differs from the environment's own.
const NOISE_SEED_SALT: u64 = 0x0015_e5e5_50a1_7ed5;

/// Adds Gaussian noise of standard deviation `sigma x scale` to every value of one modality,
/// then clips to the modality's bounds, so observations stay in their space. The scale of a
/// value is its range, `high - low`, or (for a modality with infinite bounds, a Gymnasium Box of
/// velocities, say) one given per element, e.g. measured from data: an infinite range would
/// make any noise infinite, so [`SensorNoise::new`] refuses those. `u8`
/// values are rounded stochastically (up with probability equal to the fractional part), which
/// keeps the clipped noise's mean: rounding to nearest would erase all noise below half a level,
/// and on a binary image (`0..=1`, as the pendulum's pixels) nearly all of it. The noise stream
/// is reseeded from the reset seed.
pub struct SensorNoise<E> {
    inner: E,
    modality: usize,
    sigma: f64,
    /// Per element: what `sigma` is relative to.
    scale: Vec<f64>,
    rng: EnvRng,
}

impl<E: Env> SensorNoise<E> {
    /// `sigma` is relative to each value's range (0.1: a tenth of the range). A modality with
    /// an infinite bound is refused, naming it: use [`SensorNoise::with_scale`].
    pub fn new(inner: E, modality: &str, sigma: f64) -> Result<Self, EnvError> {
        let index = inner.observation_space().require(modality)?;
        let spec = inner.observation_space().spec(index);
        if let Some(k) = (0..spec.numel()).find(|&k| !(spec.high[k] - spec.low[k]).is_finite()) {
            return Err(EnvError::InvalidParam {
                env: inner.name().to_string(),
                param: "sensor_noise".into(),
                reason: format!(
                    "modality `{modality}` element {k} has bounds [{}, {}]: noise relative to the value range would \
                     be infinite; give a finite scale per element (measured from data, as `evaluate` does)",
                    spec.low[k], spec.high[k]
                ),
            });
        }
        let scale = spec.low.iter().zip(&spec.high).map(|(&lo, &hi)| (hi - lo) as f64).collect();
        Self::with_scale(inner, modality, sigma, scale)
    }

    /// `sigma` relative to `scale`, one finite value >= 0 per element of the modality.
    pub fn with_scale(inner: E, modality: &str, sigma: f64, scale: Vec<f64>) -> Result<Self, EnvError> {
        let index = inner.observation_space().require(modality)?;
        let bad = |reason: String| EnvError::InvalidParam {
            env: inner.name().to_string(),
            param: "sensor_noise".into(),
            reason,
        };
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(bad(format!("sigma must be a finite number >= 0, got {sigma}")));
        }
        let numel = inner.observation_space().spec(index).numel();
        if scale.len() != numel {
            return Err(bad(format!("modality `{modality}` has {numel} values, the scale {}", scale.len())));
        }
        if let Some(k) = scale.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(bad(format!("modality `{modality}` element {k}: scale {} must be finite and >= 0", scale[k])));
        }
        Ok(Self { inner, modality: index, sigma, scale, rng: EnvRng::seed_from_u64(NOISE_SEED_SALT) })
    }

    fn apply(&mut self, obs: &mut Obs) {
        if !obs.present[self.modality] || self.sigma == 0.0 {
            return;
        }
        let spec = self.inner.observation_space().spec(self.modality);
        let unit = Normal::new(0.0, 1.0).expect("unit normal");
        match &mut obs.data[self.modality] {
            ModalityData::F32(v) => {
                for (k, x) in v.iter_mut().enumerate() {
                    let (lo, hi) = (spec.low[k], spec.high[k]);
                    let noise = unit.sample(&mut self.rng) * self.sigma * self.scale[k];
                    *x = (*x as f64 + noise).clamp(lo as f64, hi as f64) as f32;
                }
            }
            ModalityData::U8(v) => {
                for (k, x) in v.iter_mut().enumerate() {
                    let (lo, hi) = (spec.low[k], spec.high[k]);
                    let noise = unit.sample(&mut self.rng) * self.sigma * self.scale[k];
                    let noisy = (*x as f64 + noise).clamp(lo as f64, hi as f64);
                    let up = self.rng.gen::<f64>() < noisy.fract();
                    *x = (noisy.floor() + if up { 1.0 } else { 0.0 }) as u8;
                }
            }
        }
    }
}

impl<E: Env> Env for SensorNoise<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("SensorNoise", &self.rng, &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("SensorNoise")?)?;
        self.rng = state.fields("SensorNoise")?;
        Ok(())
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn observation_space(&self) -> &ObsSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        if let Some(seed) = seed {
            self.rng = EnvRng::seed_from_u64(seed ^ NOISE_SEED_SALT);
        }
        let (mut obs, info) = self.inner.reset(seed)?;
        self.apply(&mut obs);
        Ok((obs, info))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        self.apply(&mut step.obs);
        Ok(step)
    }
}

/// A frozen sensor: one modality keeps showing what it showed at the episode's first
/// observation (a camera that stopped updating), still marked present.
pub struct StaleSensor<E> {
    inner: E,
    modality: usize,
    frozen: Option<ModalityData>,
}

impl<E: Env> StaleSensor<E> {
    pub fn new(inner: E, modality: &str) -> Result<Self, EnvError> {
        let index = inner.observation_space().require(modality)?;
        Ok(Self { inner, modality: index, frozen: None })
    }
}

impl<E: Env> Env for StaleSensor<E> {
    fn save_state(&self) -> Option<EnvState> {
        save_wrapper("StaleSensor", &self.frozen, &self.inner)
    }
    fn restore_state(&mut self, state: &EnvState) -> Result<(), EnvError> {
        self.inner.restore_state(state.inner("StaleSensor")?)?;
        self.frozen = state.fields("StaleSensor")?;
        Ok(())
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn observation_space(&self) -> &ObsSpace {
        self.inner.observation_space()
    }
    fn action_space(&self) -> &ActionSpace {
        self.inner.action_space()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<(Obs, Info), EnvError> {
        let (obs, info) = self.inner.reset(seed)?;
        self.frozen = Some(obs.data[self.modality].clone());
        Ok((obs, info))
    }
    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let mut step = self.inner.step(action)?;
        if let Some(frozen) = &self.frozen {
            step.obs.data[self.modality].clone_from(frozen);
        }
        Ok(step)
    }
}
