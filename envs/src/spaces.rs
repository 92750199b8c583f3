//! Observation and action spaces.
//!
//! An observation space is an ordered map from modality name to a [`ModalitySpec`]; the order is
//! fixed (sorted by name) so that every observation, batch buffer and network lists the
//! modalities in the same order. Networks are built from these specs, never from hard-coded sizes.

use std::fmt;

use crate::error::EnvError;

/// Element type of one modality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// Bytes: pixels stay `u8` in every buffer and are converted to floats on the learner.
    U8,
    F32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::U8 => "u8",
            DType::F32 => "f32",
        })
    }
}

/// What one modality looks like: shape, element type and inclusive bounds.
///
/// Image modalities are `[channels, height, width]` (stacked frames are channels); vector
/// modalities are `[dim]`. Bounds are inclusive and hold one value per element, so a vector can
/// mix ranges (cos in [-1, 1], angular speed in [-8, 8]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModalitySpec {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

impl ModalitySpec {
    /// A spec whose every element lies in `[low, high]`.
    pub fn uniform(shape: &[usize], dtype: DType, low: f32, high: f32) -> Self {
        let numel = shape.iter().product();
        Self { shape: shape.to_vec(), dtype, low: vec![low; numel], high: vec![high; numel] }
    }

    /// A vector spec with one `(low, high)` per element.
    pub fn vector(bounds: &[(f32, f32)]) -> Self {
        Self {
            shape: vec![bounds.len()],
            dtype: DType::F32,
            low: bounds.iter().map(|b| b.0).collect(),
            high: bounds.iter().map(|b| b.1).collect(),
        }
    }

    /// Number of elements of one observation of this modality.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `true` for `[channels, height, width]` modalities (encoders use a conv trunk for them).
    pub fn is_image(&self) -> bool {
        self.shape.len() == 3
    }

    /// The same spec stacked over `k` frames along the first axis (channels or the vector).
    pub fn stacked(&self, k: usize) -> Self {
        let mut shape = self.shape.clone();
        shape[0] *= k;
        Self { shape, dtype: self.dtype, low: self.low.repeat(k), high: self.high.repeat(k) }
    }

    /// Checks that the spec is internally consistent.
    pub fn validate(&self, name: &str) -> Result<(), EnvError> {
        let bad = |why: String| Err(EnvError::InvalidSpace(format!("modality `{name}`: {why}")));
        if self.shape.is_empty() || self.shape.contains(&0) {
            return bad(format!("shape {:?} must be non-empty with positive sizes", self.shape));
        }
        let n = self.numel();
        if self.low.len() != n || self.high.len() != n {
            return bad(format!(
                "bounds have {} and {} values, expected {n} (one per element)",
                self.low.len(),
                self.high.len()
            ));
        }
        // NaN bounds compare as None and are rejected too.
        if let Some(i) = (0..n).find(|&i| self.low[i].partial_cmp(&self.high[i]).is_none_or(|o| o.is_gt())) {
            return bad(format!("element {i}: low {} > high {}", self.low[i], self.high[i]));
        }
        Ok(())
    }
}

/// The named modalities an environment observes, sorted by name.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObsSpace {
    modalities: Vec<(String, ModalitySpec)>,
}

impl ObsSpace {
    /// Builds a space from `(name, spec)` pairs in any order; it is stored sorted by name.
    pub fn new(modalities: impl IntoIterator<Item = (impl Into<String>, ModalitySpec)>) -> Result<Self, EnvError> {
        let mut modalities: Vec<(String, ModalitySpec)> = modalities.into_iter().map(|(n, s)| (n.into(), s)).collect();
        modalities.sort_by(|a, b| a.0.cmp(&b.0));
        if modalities.is_empty() {
            return Err(EnvError::InvalidSpace("an observation space needs at least one modality".into()));
        }
        for w in modalities.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(EnvError::InvalidSpace(format!("modality `{}` is declared twice", w[0].0)));
            }
        }
        for (name, spec) in &modalities {
            spec.validate(name)?;
        }
        Ok(Self { modalities })
    }

    pub fn len(&self) -> usize {
        self.modalities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modalities.is_empty()
    }

    /// `(name, spec)` in the fixed (sorted) order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &ModalitySpec)> {
        self.modalities.iter().map(|(n, s)| (n.as_str(), s))
    }

    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.modalities.iter().map(|(n, _)| n.as_str())
    }

    pub fn spec(&self, index: usize) -> &ModalitySpec {
        &self.modalities[index].1
    }

    pub fn name(&self, index: usize) -> &str {
        &self.modalities[index].0
    }

    /// Position of a modality in the fixed order.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.modalities.iter().position(|(n, _)| n == name)
    }

    /// Like [`index_of`](Self::index_of), with an error that lists the modalities there are.
    pub fn require(&self, name: &str) -> Result<usize, EnvError> {
        self.index_of(name).ok_or_else(|| EnvError::UnknownModality {
            name: name.to_string(),
            available: self.names().map(String::from).collect(),
        })
    }

    /// Applies `f` to every spec (used by wrappers that change shapes, such as frame stacking).
    pub fn map_specs(&self, mut f: impl FnMut(&str, &ModalitySpec) -> ModalitySpec) -> Self {
        Self { modalities: self.modalities.iter().map(|(n, s)| (n.clone(), f(n, s))).collect() }
    }
}

impl fmt::Display for ObsSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, spec)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {}{:?}", spec.dtype, spec.shape)?;
        }
        f.write_str("}")
    }
}

/// Actions an environment accepts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ActionSpace {
    /// Continuous actions with inclusive per-dimension bounds.
    Box { low: Vec<f32>, high: Vec<f32> },
    /// One of `n` actions, `0..n`.
    Discrete(usize),
}

impl ActionSpace {
    /// Number of numbers a policy outputs: the dimension of a Box, `n` logits for Discrete.
    pub fn policy_outputs(&self) -> usize {
        match self {
            ActionSpace::Box { low, .. } => low.len(),
            ActionSpace::Discrete(n) => *n,
        }
    }

    /// Checks an action against this space: the right kind, the right shape, finite values and
    /// a Discrete index in range. Box values outside the bounds are accepted: each environment
    /// documents whether it clips them (Gymnasium's Pendulum clips its torque).
    pub fn check(&self, action: &Action) -> Result<(), String> {
        match (self, action) {
            (ActionSpace::Box { low, .. }, Action::Continuous(a)) => {
                if a.len() != low.len() {
                    return Err(format!("expected {} continuous values, got {}", low.len(), a.len()));
                }
                if let Some(i) = a.iter().position(|v| !v.is_finite()) {
                    return Err(format!("value {i} is {} (not finite)", a[i]));
                }
                Ok(())
            }
            (ActionSpace::Discrete(n), Action::Discrete(a)) => {
                if *a < 0 || *a as u64 >= *n as u64 {
                    Err(format!("discrete action {a} is outside 0..{n}"))
                } else {
                    Ok(())
                }
            }
            (ActionSpace::Box { low, .. }, Action::Discrete(a)) => {
                Err(format!("expected {} continuous values, got the discrete action {a}", low.len()))
            }
            (ActionSpace::Discrete(n), Action::Continuous(a)) => {
                Err(format!("expected a discrete action in 0..{n}, got continuous values {a:?}"))
            }
        }
    }

    /// A uniformly random valid action.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> Action {
        match self {
            ActionSpace::Box { low, high } => {
                Action::Continuous(low.iter().zip(high).map(|(&l, &h)| sample_in(l, h, rng)).collect())
            }
            ActionSpace::Discrete(n) => Action::Discrete(rng.gen_range(0..*n as i64)),
        }
    }

    /// Checks that the space itself is well formed.
    pub fn validate(&self) -> Result<(), EnvError> {
        match self {
            ActionSpace::Box { low, high } => {
                if low.is_empty() || low.len() != high.len() {
                    return Err(EnvError::InvalidSpace(format!(
                        "Box action bounds must be non-empty and of equal length, got {} and {}",
                        low.len(),
                        high.len()
                    )));
                }
                if let Some(i) =
                    (0..low.len()).find(|&i| !low[i].is_finite() || !high[i].is_finite() || low[i] > high[i])
                {
                    return Err(EnvError::InvalidSpace(format!(
                        "Box action dimension {i}: bounds [{}, {}] must be finite with low <= high",
                        low[i], high[i]
                    )));
                }
                Ok(())
            }
            ActionSpace::Discrete(0) => Err(EnvError::InvalidSpace("Discrete(0) has no actions".into())),
            ActionSpace::Discrete(_) => Ok(()),
        }
    }
}

impl fmt::Display for ActionSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionSpace::Box { low, high } => write!(f, "Box(low={low:?}, high={high:?})"),
            ActionSpace::Discrete(n) => write!(f, "Discrete({n})"),
        }
    }
}

/// A uniform draw from `[low, high]` (a degenerate interval gives `low`).
pub(crate) fn sample_in(low: f32, high: f32, rng: &mut impl rand::Rng) -> f32 {
    if low < high {
        rng.gen_range(low..=high)
    } else {
        low
    }
}

/// One action for one environment.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    Continuous(Vec<f32>),
    /// Signed so that a negative index can be represented, and rejected.
    Discrete(i64),
}
