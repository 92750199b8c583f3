//! The actor-critic that owns the M3ixup encoder (docs/DESIGN.md, "Learning").
//!
//! ```text
//!   observation ──encoder──> r ──actor MLP──> mean (Box) or logits (Discrete)
//!   (named modalities,       │
//!    presence mask)          └──critic MLP──> V(s)
//! ```
//!
//! `r` is the encoder's latent z (`policy_input = "latent"`, the paper's choice: the policy reads
//! what the contrastive loss aligns, so a missing sensor's fallback lands in the same space) or
//! its pre-projection features h (`"features"`). Both follow the missing-modality rule of
//! [`M3ixupEncoder::encode`]. Gradients of the policy and value losses flow into the encoder.
//!
//! **Actions.** Box spaces: a diagonal Gaussian with an observation-independent log-std
//! parameter, in a normalised space: the environment receives `center + half_range *
//! clip(a, -1, 1)`, so a unit-variance policy explores the whole range whatever the bounds, and
//! the log-probability is that of the unclipped sample `a` (as in Stable-Baselines3 and CleanRL).
//! Discrete spaces: a categorical over logits.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, tanh};
use m3ixup_envs::{ActionSpace, BatchActions, ObsSpace};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::representation::encoder::{
    EncoderConfig, EncoderError, Features, M3ixupEncoder, Materialize, MultimodalInput, Presence,
};

/// What the actor and critic heads read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyInput {
    /// The L2-normalised latent z (`latent_dim` values).
    #[default]
    Latent,
    /// The pre-projection features h (`feature_dim` values).
    Features,
}

/// The heads on top of the encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorCriticConfig {
    /// What the heads read: `"latent"` (z) or `"features"` (h).
    pub policy_input: PolicyInput,
    /// Hidden widths of the actor MLP and of the critic MLP (each its own; tanh after each layer).
    pub hidden: Vec<usize>,
    /// Initial log standard deviation of the Gaussian policy (Box actions), in normalised units.
    pub log_std_init: f64,
}

impl Default for ActorCriticConfig {
    fn default() -> Self {
        Self { policy_input: PolicyInput::Latent, hidden: vec![64, 64], log_std_init: 0.0 }
    }
}

impl ActorCriticConfig {
    pub fn validate(&self) -> Result<(), EncoderError> {
        if self.hidden.contains(&0) {
            return Err(EncoderError::InvalidConfig {
                field: "hidden".into(),
                reason: "widths must be positive".into(),
            });
        }
        if !self.log_std_init.is_finite() {
            return Err(EncoderError::InvalidConfig {
                field: "log_std_init".into(),
                reason: format!("{} is not finite", self.log_std_init),
            });
        }
        Ok(())
    }

    /// Builds the encoder (from `encoder`) and the heads for these spaces.
    pub fn init<B: Backend>(
        &self,
        encoder: &EncoderConfig,
        obs_space: &ObsSpace,
        action_space: &ActionSpace,
        device: &B::Device,
    ) -> Result<ActorCritic<B>, EncoderError> {
        self.validate()?;
        action_space
            .validate()
            .map_err(|e| EncoderError::InvalidConfig { field: "action_space".into(), reason: e.to_string() })?;
        let encoder = encoder.init::<B>(obs_space, device)?;
        let repr_dim = match self.policy_input {
            PolicyInput::Latent => encoder.latent_dim(),
            PolicyInput::Features => encoder.feature_dim(),
        };
        let outputs = action_space.policy_outputs();
        let (continuous, log_std_len) = match action_space {
            ActionSpace::Box { low, .. } => (true, low.len()),
            ActionSpace::Discrete(_) => (false, 1), // unused, kept so the module shape is uniform
        };
        let log_std = Param::from_tensor(Tensor::full([log_std_len], self.log_std_init, device));
        let agent = ActorCritic {
            encoder,
            actor: Mlp::new(repr_dim, &self.hidden, outputs, device),
            critic: Mlp::new(repr_dim, &self.hidden, 1, device),
            log_std,
            policy_input_latent: self.policy_input == PolicyInput::Latent,
            continuous,
        };
        // The heads' parameters are drawn now, in construction order, not lazily at first use:
        // otherwise whatever else draws from the backend's RNG first (a CPU copy of the policy,
        // say) would change them.
        Ok(agent.map(&mut Materialize))
    }
}

/// Linear layers with tanh between them, a linear output.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(input: usize, hidden: &[usize], output: usize, device: &B::Device) -> Self {
        let widths: Vec<usize> = std::iter::once(input).chain(hidden.iter().copied()).chain([output]).collect();
        Self { layers: widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect() }
    }

    /// `[N, input]` -> `[N, output]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_with(x, tanh)
    }

    /// As [`Mlp::forward`] with `activation` between the layers (the off-policy agents use ReLU).
    pub fn forward_with(&self, mut x: Tensor<B, 2>, activation: fn(Tensor<B, 2>) -> Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = activation(x);
            }
        }
        x
    }
}

/// Encoder, actor head, critic head and the Gaussian log-std.
#[derive(Module, Debug)]
pub struct ActorCritic<B: Backend> {
    pub encoder: M3ixupEncoder<B>,
    pub actor: Mlp<B>,
    pub critic: Mlp<B>,
    /// Observation-independent log standard deviation, `[action_dim]` (Box actions only).
    pub log_std: Param<Tensor<B, 1>>,
    policy_input_latent: bool,
    continuous: bool,
}

/// The heads' outputs for a batch.
#[derive(Clone, Debug)]
pub struct HeadOutputs<B: Backend> {
    /// Gaussian means `[N, action_dim]` (normalised units) or logits `[N, n]`.
    pub policy: Tensor<B, 2>,
    /// V(s), `[N]`.
    pub value: Tensor<B, 1>,
}

impl<B: Backend> ActorCritic<B> {
    pub fn is_continuous(&self) -> bool {
        self.continuous
    }

    /// The representation the heads read, with the missing-modality fallback.
    pub fn representation(&self, x: &MultimodalInput<B>, presence: &Presence) -> Tensor<B, 2> {
        if self.policy_input_latent {
            self.encoder.encode(x, presence)
        } else {
            self.encoder.encode_features(x, presence)
        }
    }

    /// The representation the heads read for features `h` (rows of h_M, or of one h_u when that
    /// modality is the only one present): g(h) with `policy_input = "latent"`, `h` otherwise.
    pub fn representation_of_features(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.policy_input_latent {
            self.encoder.project(h)
        } else {
            h
        }
    }

    /// [`Self::representation`] of rows whose features were computed from every modality's data
    /// (a dropout with `keep_data` keeps a missing sensor's): the same missing-modality rule on
    /// `feats` and `z_m = g(h_M)`, no trunk pass. A missing modality's data does not reach it.
    pub fn representation_by_presence(
        &self,
        feats: &Features<B>,
        z_m: &Tensor<B, 2>,
        presence: &Presence,
    ) -> Tensor<B, 2> {
        let joint = self.joint_representation(&feats.joint, z_m);
        let [_, dim] = joint.dims();
        let device = joint.device();
        self.encoder.by_presence(
            presence,
            Some(joint),
            |u| self.representation_of_features(feats.unimodal[u].clone()),
            dim,
            &device,
        )
    }

    /// [`Self::representation_of_features`] for complete rows whose h_M and z_M = g(h_M) are
    /// already computed: picks one, projects nothing.
    pub fn joint_representation(&self, h_m: &Tensor<B, 2>, z_m: &Tensor<B, 2>) -> Tensor<B, 2> {
        if self.policy_input_latent {
            z_m.clone()
        } else {
            h_m.clone()
        }
    }

    /// KL(pi_teacher || pi_student) per row, `[N]`, for two policy outputs (actor rows) of the
    /// same rows. Gaussians share the log-std, taken as a constant here (the term moves the
    /// means, not the exploration noise): sum over actions of (mu_s - mu_t)^2 / (2 sigma^2).
    /// Categoricals: sum of p_t (log p_t - log p_s).
    pub fn policy_kl(&self, teacher: Tensor<B, 2>, student: Tensor<B, 2>) -> Tensor<B, 1> {
        let [n, k] = student.dims();
        if self.continuous {
            let var = self.log_std.val().detach().mul_scalar(2.0).exp().reshape([1, k]);
            (student - teacher).square().div(var.mul_scalar(2.0)).sum_dim(1).reshape([n])
        } else {
            let log_t = log_softmax(teacher, 1);
            let log_s = log_softmax(student, 1);
            (log_t.clone().exp() * (log_t - log_s)).sum_dim(1).reshape([n])
        }
    }

    /// The heads on a representation `[N, repr_dim]`.
    pub fn heads(&self, repr: Tensor<B, 2>) -> HeadOutputs<B> {
        let n = repr.dims()[0];
        HeadOutputs { policy: self.actor.forward(repr.clone()), value: self.critic.forward(repr).reshape([n]) }
    }

    /// Representation then heads.
    pub fn forward(&self, x: &MultimodalInput<B>, presence: &Presence) -> HeadOutputs<B> {
        self.heads(self.representation(x, presence))
    }

    /// Log-probability `[N]` of `actions` (`[N, action_dim]` raw Gaussian samples, or `[N, 1]`
    /// indices as floats) and the entropy `[N]` of the policy given by `policy`.
    pub fn log_prob_entropy(&self, policy: Tensor<B, 2>, actions: Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [n, k] = policy.dims();
        if self.continuous {
            let log_std = self.log_std.val().reshape([1, k]); // [1, A]
            let z = (actions - policy).div(log_std.clone().exp()); // [N, A]
            let log_2pi = (2.0 * std::f32::consts::PI).ln();
            let log_prob = z.square().mul_scalar(-0.5) - log_std.clone() - 0.5 * log_2pi;
            let entropy = (log_std + (0.5 + 0.5 * log_2pi)).sum_dim(1).repeat_dim(0, n); // [N, 1]
            (log_prob.sum_dim(1).reshape([n]), entropy.reshape([n]))
        } else {
            let log_p = log_softmax(policy, 1); // [N, n]
            let index = actions.int().reshape([n, 1]);
            let log_prob = log_p.clone().gather(1, index).reshape([n]);
            let entropy = (log_p.clone().exp() * log_p).sum_dim(1).neg().reshape([n]);
            (log_prob, entropy)
        }
    }

    /// The current log-std as host values (Box actions; empty for Discrete).
    pub fn log_std_values(&self) -> Vec<f32> {
        if self.continuous {
            self.log_std.val().into_data().convert::<f32>().to_vec().expect("f32 data")
        } else {
            Vec::new()
        }
    }
}

/// Actions chosen for a batch on the host: what is stored for learning (`raw`) and what the
/// environments receive (`env`).
#[derive(Clone, Debug, PartialEq)]
pub struct ChosenActions {
    /// `[N * action_dim]` raw Gaussian samples (Box) or `[N]` indices as floats (Discrete).
    pub raw: Vec<f32>,
    /// Their log-probabilities `[N]` under the policy that chose them.
    pub log_prob: Vec<f32>,
    /// The environments' actions (Box: scaled to the bounds and clipped).
    pub env: BatchActions,
}

/// Samples (or, when `deterministic`, takes the mode of) the policy given by `policy` (host
/// values, `[N, k]` row-major) and `log_std`. The draws come from `rng`, so a seeded rollout is
/// reproducible whatever the backend.
pub fn choose_actions<R: Rng + ?Sized>(
    space: &ActionSpace,
    policy: &[f32],
    log_std: &[f32],
    deterministic: bool,
    rng: &mut R,
) -> ChosenActions {
    match space {
        ActionSpace::Box { low, high } => {
            let a = low.len();
            let n = policy.len() / a;
            let mut raw = Vec::with_capacity(n * a);
            let mut log_prob = vec![0.0f32; n];
            let log_2pi = (2.0 * std::f64::consts::PI).ln();
            for (row, lp) in policy.chunks_exact(a).zip(&mut log_prob) {
                let mut sum = 0.0f64;
                for (j, &mean) in row.iter().enumerate() {
                    let eps: f64 = if deterministic { 0.0 } else { StandardNormal.sample(rng) };
                    let std = (log_std[j] as f64).exp();
                    raw.push((mean as f64 + std * eps) as f32);
                    sum += -0.5 * eps * eps - log_std[j] as f64 - 0.5 * log_2pi;
                }
                *lp = sum as f32;
            }
            let env = raw
                .chunks_exact(a)
                .flat_map(|r| r.iter().enumerate().map(|(j, &v)| scale_to_bounds(v, low[j], high[j])))
                .collect();
            ChosenActions { raw, log_prob, env: BatchActions::Continuous(env) }
        }
        ActionSpace::Discrete(k) => {
            let n = policy.len() / k;
            let mut raw = Vec::with_capacity(n);
            let mut log_prob = Vec::with_capacity(n);
            let mut env = Vec::with_capacity(n);
            for logits in policy.chunks_exact(*k) {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
                let choice = if deterministic {
                    logits.iter().enumerate().fold(0, |best, (i, &l)| if l > logits[best] { i } else { best })
                } else {
                    let u: f64 = rng.gen::<f64>() * sum;
                    let mut acc = 0.0;
                    let mut pick = k - 1;
                    for (i, &l) in logits.iter().enumerate() {
                        acc += ((l - max) as f64).exp();
                        if u < acc {
                            pick = i;
                            break;
                        }
                    }
                    pick
                };
                raw.push(choice as f32);
                log_prob.push(((logits[choice] - max) as f64 - sum.ln()) as f32);
                env.push(choice as i64);
            }
            ChosenActions { raw, log_prob, env: BatchActions::Discrete(env) }
        }
    }
}

/// A normalised action value mapped to `[low, high]`: `center + half_range * clip(v, -1, 1)`.
pub fn scale_to_bounds(v: f32, low: f32, high: f32) -> f32 {
    let (center, half) = ((high + low) * 0.5, (high - low) * 0.5);
    center + half * v.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn normalised_actions_are_scaled_to_the_bounds_and_clipped() {
        assert_eq!(scale_to_bounds(0.0, -2.0, 2.0), 0.0);
        assert_eq!(scale_to_bounds(0.5, -2.0, 2.0), 1.0);
        assert_eq!(scale_to_bounds(3.0, -2.0, 2.0), 2.0);
        assert_eq!(scale_to_bounds(-1.0, 0.0, 1.0), 0.0);
    }

    #[test]
    fn host_log_probabilities_match_the_learner_s() {
        let device = Default::default();
        let space = ObsSpace::new([("proprio", m3ixup_envs::ModalitySpec::vector(&[(-1.0, 1.0); 3]))]).unwrap();
        for action_space in [ActionSpace::Box { low: vec![-2.0, 0.0], high: vec![2.0, 1.0] }, ActionSpace::Discrete(4)]
        {
            let config = ActorCriticConfig { log_std_init: -0.3, ..Default::default() };
            let ac = config.init::<Flex>(&EncoderConfig::default(), &space, &action_space, &device).unwrap();
            let k = action_space.policy_outputs();
            let policy: Vec<f32> = (0..3 * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let chosen =
                choose_actions(&action_space, &policy, &ac.log_std_values(), false, &mut StdRng::seed_from_u64(1));
            let cols = if ac.is_continuous() { k } else { 1 };
            let (lp, entropy) = ac.log_prob_entropy(
                Tensor::from_data(TensorData::new(policy, [3, k]), &device),
                Tensor::from_data(TensorData::new(chosen.raw.clone(), [3, cols]), &device),
            );
            let lp: Vec<f32> = lp.into_data().to_vec().unwrap();
            for (a, b) in lp.iter().zip(&chosen.log_prob) {
                assert!((a - b).abs() < 1e-4, "{action_space:?}: {a} vs {b}");
            }
            let entropy: Vec<f32> = entropy.into_data().to_vec().unwrap();
            if ac.is_continuous() {
                // Sum over dimensions of 0.5 + 0.5 ln(2 pi) + log_std.
                let expected = 2.0 * (0.5 + 0.5 * (2.0 * std::f32::consts::PI).ln() - 0.3);
                assert!((entropy[0] - expected).abs() < 1e-5);
            } else {
                assert!(entropy.iter().all(|&e| e > 0.0 && e <= (4.0f32).ln() + 1e-5));
            }
        }
    }

    #[test]
    fn deterministic_actions_are_the_mode() {
        let chosen =
            choose_actions(&ActionSpace::Discrete(3), &[0.1, 2.0, -1.0], &[], true, &mut StdRng::seed_from_u64(0));
        assert_eq!(chosen.env, BatchActions::Discrete(vec![1]));
        let space = ActionSpace::Box { low: vec![-2.0], high: vec![2.0] };
        let chosen = choose_actions(&space, &[0.25], &[0.0], true, &mut StdRng::seed_from_u64(0));
        assert_eq!(chosen.env, BatchActions::Continuous(vec![0.5]));
    }
}
