//! Saved environment states, for runs that stop and continue exactly where they stopped.
//!
//! [`Env::save_state`] returns an [`EnvState`]: one layer per environment or wrapper, each
//! holding its own fields (MessagePack: floats and random-number generators round-trip bit for
//! bit) and the state of what it wraps. [`Env::restore_state`] checks each layer's `kind`, so a
//! state saved from another environment or another wrapper stack is an error, never a silent
//! mix. Environments that cannot save their state (a Python Gymnasium environment) keep the
//! default, `None`, and callers start fresh episodes instead.
//!
//! [`Env::save_state`]: crate::Env::save_state
//! [`Env::restore_state`]: crate::Env::restore_state

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::EnvError;

/// The random-number generator of the built-in environments and wrappers. It is rand 0.8's
/// `StdRng` algorithm (ChaCha with 12 rounds, seeded the same way: the streams are identical),
/// named directly because `StdRng` cannot be saved and this one can (its position included).
pub type EnvRng = rand_chacha::ChaCha12Rng;

/// One layer of a saved environment state (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    /// Which environment or wrapper saved this layer (its registered name or wrapper name).
    pub kind: String,
    /// Its own fields, MessagePack-encoded.
    pub fields: Vec<u8>,
    /// The state of the wrapped environment (wrappers only).
    pub inner: Option<Box<EnvState>>,
}

impl EnvState {
    /// A layer of kind `kind` holding `fields`, around `inner` (for wrappers).
    pub fn new<T: Serialize>(kind: &str, fields: &T, inner: Option<EnvState>) -> Self {
        // Plain data (numbers, vectors, generators) always encodes.
        let fields = rmp_serde::to_vec(fields).expect("environment state fields encode as MessagePack");
        Self { kind: kind.to_string(), fields, inner: inner.map(Box::new) }
    }

    /// This layer's fields, after checking that `kind` saved it.
    pub fn fields<T: DeserializeOwned>(&self, kind: &str) -> Result<T, EnvError> {
        self.check_kind(kind)?;
        rmp_serde::from_slice(&self.fields).map_err(|e| EnvError::State {
            env: kind.to_string(),
            reason: format!("the saved fields do not decode: {e}"),
        })
    }

    /// The wrapped environment's state, after checking that `kind` saved this layer.
    pub fn inner(&self, kind: &str) -> Result<&EnvState, EnvError> {
        self.check_kind(kind)?;
        self.inner.as_deref().ok_or_else(|| EnvError::State {
            env: kind.to_string(),
            reason: "the saved state has no wrapped environment".into(),
        })
    }

    fn check_kind(&self, kind: &str) -> Result<(), EnvError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(EnvError::State {
                env: kind.to_string(),
                reason: format!("the saved state is of `{}` (another environment or wrapper stack)", self.kind),
            })
        }
    }
}

/// Saves a wrapper: its fields around its inner environment's state (`None` if that one
/// cannot save).
pub(crate) fn save_wrapper<T: Serialize>(kind: &str, fields: &T, inner: &dyn crate::Env) -> Option<EnvState> {
    inner.save_state().map(|state| EnvState::new(kind, fields, Some(state)))
}
