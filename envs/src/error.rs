//! Errors of the environment layer. Every message names what was wrong and where.

/// What can go wrong when building, stepping or batching environments.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// An action that does not fit the action space (wrong shape, NaN, Discrete out of range).
    #[error("environment `{env}` rejected the action: {reason}")]
    InvalidAction { env: String, reason: String },
    /// A space that cannot be used (empty, duplicate modality, inconsistent bounds).
    #[error("invalid space: {0}")]
    InvalidSpace(String),
    #[error("unknown environment `{name}`; registered environments: {}", available.join(", "))]
    UnknownEnv { name: String, available: Vec<String> },
    #[error("environment `{env}`: invalid parameter `{param}`: {reason}")]
    InvalidParam { env: String, param: String, reason: String },
    #[error("unknown modality `{name}`; this observation space has: {}", available.join(", "))]
    UnknownModality { name: String, available: Vec<String> },
    /// `step` was called before the first `reset`.
    #[error("environment `{env}`: step called before reset")]
    NeedsReset { env: String },
    /// A sub-environment of a vector environment failed or panicked.
    #[error("sub-environment {index} failed: {cause}")]
    SubEnv { index: usize, cause: String },
    /// A worker thread stopped answering or died.
    #[error("vector-environment worker {worker} (sub-environments {first}..{end}) failed: {cause}")]
    Worker { worker: usize, first: usize, end: usize, cause: String },
    /// A saved state that cannot be restored (another environment's, damaged), or an
    /// environment that cannot save or restore its state.
    #[error("environment `{env}`: cannot restore the saved state: {reason}")]
    State { env: String, reason: String },
    /// Anything else an environment wants to report (for example a Python exception).
    #[error("environment `{env}`: {message}")]
    Other { env: String, message: String },
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}
