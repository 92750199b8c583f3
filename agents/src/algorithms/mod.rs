//! The training algorithms behind one trait, and the registry that finds one by name: the
//! `algo` key of a config, the `algo` of a checkpoint's `state.toml`.
//!
//! An algorithm is one file: its config type (a TOML document), its training loop on the
//! [`crate::infra::harness`], and its checkpoint loaded as a [`Policy`]. It becomes known to `train`,
//! `evaluate` and everything else that goes by name with one entry in the `registry!` below.
//! Callers that need the algorithm's types (to read its config, to train it on a backend)
//! implement [`AlgorithmVisitor`]; the registry calls them back with the algorithm's type.
//!
//! The algorithms, one file each: [`ppo`] (PPO + the auxiliary loss, on [`actor_critic`] heads
//! and a [`rollout`] buffer), [`sac`] (SAC + the auxiliary loss) and [`ddpg`] (DDPG on a frozen
//! pretrained encoder), the two off-policy ones sharing [`off_policy`] and the [`replay`] buffer.

pub mod actor_critic;
pub mod ddpg;
pub mod off_policy;
pub mod ppo;
pub mod replay;
pub mod rollout;
pub mod sac;

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::evaluate::Policy;
use crate::infra::checkpoint::{CheckpointState, TrainError};
use crate::infra::harness::{TrainOptions, TrainSummary};
use crate::representation::sections::EnvSection;

/// A config of one algorithm: what `train` reads from TOML and checks before it makes a run
/// directory.
pub trait AlgorithmConfig: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Checks every value; the error names the field.
    fn validate(&self) -> Result<(), TrainError>;
    /// Checks what the config points at outside itself (files), for `train` to call before it
    /// makes a run directory.
    fn check_inputs(&self) -> Result<(), TrainError> {
        Ok(())
    }
    /// The environment it trains on.
    fn env(&self) -> &EnvSection;
    /// One line saying how long the run is, for `train` to print (`None`: nothing to add to
    /// `train.total_steps`).
    fn plan(&self) -> Option<String> {
        None
    }
}

/// A training algorithm.
pub trait Algorithm: 'static {
    /// Its name in configs (`algo = "..."`) and checkpoints.
    const NAME: &'static str;
    type Config: AlgorithmConfig;
    /// The trained controller a checkpoint holds.
    type Agent<B: Backend>: Policy<B> + 'static;

    /// Trains as configured, writing metrics and checkpoints to `run`.
    fn train<B: AutodiffBackend>(
        config: &Self::Config,
        run: &crate::infra::run::RunDir,
        device: &B::Device,
        options: &TrainOptions,
    ) -> Result<TrainSummary, TrainError>;

    /// The agent saved in the checkpoint directory `dir`, with the checkpoint's state and the
    /// run's config. A checkpoint of another network, or a damaged one, is an error naming the
    /// file.
    fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<Saved<Self, B>, TrainError>;
}

/// What a checkpoint of algorithm `A` holds: the agent, the checkpoint's state, the run's config.
pub type Saved<A, B> = (<A as Algorithm>::Agent<B>, CheckpointState, <A as Algorithm>::Config);

/// Work that needs an algorithm's types; [`with_algorithm`] calls it back with the algorithm
/// a name stands for.
pub trait AlgorithmVisitor {
    type Output;
    fn visit<A: Algorithm>(self) -> Self::Output;
}

/// The registry: each algorithm's type, once (a new algorithm is one more entry). It defines
/// [`ALGORITHMS`] and [`with_algorithm`].
macro_rules! registry {
    ($($algo:ty),+ $(,)?) => {
        /// The registered algorithms' names, in registry order.
        pub const ALGORITHMS: &[&str] = &[$(<$algo as Algorithm>::NAME),+];

        /// Runs `visitor` with the algorithm called `name`.
        pub fn with_algorithm<V: AlgorithmVisitor>(name: &str, visitor: V) -> Result<V::Output, UnknownAlgorithm> {
            $(
                if name == <$algo as Algorithm>::NAME {
                    return Ok(visitor.visit::<$algo>());
                }
            )+
            Err(UnknownAlgorithm(name.to_string()))
        }
    };
}

registry!(ppo::Ppo, sac::Sac, ddpg::DdpgFrozen);

/// A name no registered algorithm has.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an algorithm this build knows (expected one of: {list})", list = ALGORITHMS.join(", "))]
pub struct UnknownAlgorithm(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl AlgorithmVisitor for Names {
        type Output = &'static str;
        fn visit<A: Algorithm>(self) -> Self::Output {
            A::NAME
        }
    }

    #[test]
    fn every_listed_name_finds_its_algorithm() {
        for &name in ALGORITHMS {
            assert_eq!(with_algorithm(name, Names).unwrap(), name);
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_listing_the_known_ones() {
        let err = with_algorithm("a2c", Names).unwrap_err().to_string();
        assert_eq!(err, "`a2c` is not an algorithm this build knows (expected one of: ppo, sac, ddpg-frozen)");
    }
}
