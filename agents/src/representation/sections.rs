//! The config sections several training programs share: `[env]` (every algorithm and
//! pretraining) and the representation loss (`[loss]` of pretraining, `[aux]` of the RL agents).

use std::fmt;

use serde::{Deserialize, Serialize};

use m3ixup_envs::registry::toml_key_at;
use m3ixup_envs::{is_registered, make, registered_names};

use crate::infra::checkpoint::TrainError;
use crate::representation::losses::{LossConfigError, LossTerm, M3ixupLossConfig};

/// `[env]`: a registered environment and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvSection {
    /// Registered name (`multimodal-pendulum`, `pixel-cartpole`, `reacher`, or a user's).
    pub name: String,
    /// The environment's parameters, including the registry's wrapper keys (`frame_stack`,
    /// `max_episode_steps`, `sensor_dropout`); empty = the environment's defaults.
    pub params: toml::Table,
}

impl EnvSection {
    /// Checks that it names a registered environment whose parameters build, and builds one.
    pub fn checked(&self) -> Result<Box<dyn m3ixup_envs::Env>, TrainError> {
        if !is_registered(&self.name) {
            return Err(TrainError::config(
                "env.name",
                format!("unknown environment `{}` (registered: {})", self.name, registered_names().join(", ")),
            ));
        }
        make(&self.name, &self.params).map_err(|e| TrainError::config("env.params", e.to_string()))
    }
}

impl Default for EnvSection {
    fn default() -> Self {
        Self { name: "multimodal-pendulum".into(), params: toml::Table::new() }
    }
}

/// Which loss trains the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// The GMC InfoNCE alone (the `[loss.gmc]` weight and `tau` apply; every other term is off).
    Gmc,
    /// The weighted M3ixup total (docs/M3IXUP.md section 3) with the terms as configured.
    #[default]
    M3ixup,
    /// No representation loss (an RL agent's `[aux]` without auxiliary loss; `pretrain`
    /// rejects it).
    None,
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossKind::Gmc => "gmc",
            LossKind::M3ixup => "m3ixup",
            LossKind::None => "none",
        })
    }
}

/// `[loss]`: `kind`, an optional `terms` list, and every key of [`M3ixupLossConfig`] (`tau`,
/// `alpha`, `[loss.gmc]`, `[loss.input]`, `[loss.manifold]`, `[loss.adapt]`, `[loss.explore]`)
/// in the same table. Unknown keys are errors naming them.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub struct LossSection {
    /// `"gmc"` or `"m3ixup"`.
    pub kind: LossKind,
    /// `terms = ["gmc", "input", ...]`: enables exactly these terms (overrides each term's
    /// `enabled`); absent = the per-term switches decide.
    pub terms: Option<Vec<String>>,
    /// The M3ixup loss options.
    pub m3ixup: M3ixupLossConfig,
}

impl TryFrom<toml::Table> for LossSection {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let kind = match table.remove("kind") {
            None => LossKind::default(),
            Some(v) => v.try_into().map_err(|e: toml::de::Error| format!("`loss.kind`: {}", e.message()))?,
        };
        let terms = match table.remove("terms") {
            None => None,
            Some(v) => Some(v.try_into().map_err(|e: toml::de::Error| format!("`loss.terms`: {}", e.message()))?),
        };
        // Through the text form, so that the error's span gives the key's path (`loss.adapt.stepz`).
        let text = toml::to_string(&table).map_err(|e| format!("[loss]: {e}"))?;
        let m3ixup = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let key = e.span().and_then(|span| toml_key_at(&text, span.start));
            format!("`loss{}`: {}", key.map(|k| format!(".{k}")).unwrap_or_default(), e.message())
        })?;
        Ok(Self { kind, terms, m3ixup })
    }
}

impl From<LossSection> for toml::Table {
    fn from(section: LossSection) -> Self {
        let mut table = match toml::Value::try_from(&section.m3ixup) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("M3ixupLossConfig serialises to a table"),
        };
        table.insert("kind".into(), toml::Value::String(section.kind.to_string()));
        if let Some(terms) = section.terms {
            table.insert("terms".into(), toml::Value::Array(terms.into_iter().map(toml::Value::String).collect()));
        }
        table
    }
}

impl LossSection {
    /// The effective auxiliary loss, checked (every algorithm's `[aux]`); errors name the key.
    pub fn checked(&self) -> Result<M3ixupLossConfig, TrainError> {
        let loss = self.effective().map_err(|e| TrainError::config("aux.terms", e.reason))?;
        loss.validate().map_err(|e| TrainError::config(&format!("aux.{}", e.field), e.reason))?;
        if self.gmc_with_other_terms() {
            return Err(TrainError::config(
                "aux.terms",
                "kind = \"gmc\" uses the GMC term alone: drop `terms` or use kind = \"m3ixup\"",
            ));
        }
        if self.kind == LossKind::M3ixup && !LossTerm::ALL.iter().any(|&t| loss.enabled(t)) {
            return Err(TrainError::config(
                "aux.terms",
                "every M3ixup term is switched off: use kind = \"none\" for no auxiliary loss",
            ));
        }
        Ok(loss)
    }

    /// `kind = "gmc"` with a `terms` list naming another term: contradictory, so an error.
    pub fn gmc_with_other_terms(&self) -> bool {
        self.kind == LossKind::Gmc && self.terms.as_ref().is_some_and(|t| t.iter().any(|n| n != "gmc"))
    }

    /// The loss the training loop evaluates: for `kind = "gmc"`, the GMC term alone; for
    /// `"m3ixup"`, the configured terms (`terms` applied). Fails on an unknown term name.
    pub fn effective(&self) -> Result<M3ixupLossConfig, LossConfigError> {
        let mut config = self.m3ixup.clone();
        if let Some(terms) = &self.terms {
            config.enable_only(terms).map_err(|e| LossConfigError { field: "terms".into(), reason: e.reason })?;
        }
        match self.kind {
            LossKind::Gmc => LossTerm::ALL.into_iter().for_each(|t| config.set_enabled(t, t == LossTerm::Gmc)),
            LossKind::None => LossTerm::ALL.into_iter().for_each(|t| config.set_enabled(t, false)),
            LossKind::M3ixup => {}
        }
        Ok(config)
    }
}
