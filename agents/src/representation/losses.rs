//! The GMC contrastive loss and the M3ixup terms (docs/M3IXUP.md sections 1 and 3).
//!
//! Shapes: `B` is the batch size, `d` the latent size, `F` the feature width (h), `n` the number
//! of modalities. Latents z are L2-normalised rows. Every loss returns a `[1]` tensor.
//!
//! The primitives ([`mix`], [`gmc_infonce`], [`info_nce`], [`soft_nce`], [`inner_step`]) are pure
//! functions of their tensors. The contrastive ones compare views with z_M through an
//! [`Anchor`], which holds what every term of a batch shares. [`m3ixup_loss`] draws the random
//! quantities ([`MixupDraws`]) from the caller's seeded RNG and evaluates
//! [`m3ixup_loss_with_draws`], a pure function of the encoder, the batch, the config and the
//! draws; the report carries the draws so a run can be replayed.
//!
//! ```text
//! L = b_gmc L_GMC + b_in L_in + b_man L_man + b_ad L_adapt + b_ex L_mix
//! ```

use std::fmt;
use std::str::FromStr;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Int;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::representation::encoder::{Features, FirstLayer, M3ixupEncoder, MultimodalInput, ProjectionHead};

// ---------------------------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------------------------

/// `mix(a, b, lambda, pi)_k = lambda * a_k + (1 - lambda) * b_pi(k)` along the first (batch) axis.
///
/// `a`, `b`: `[B, ...]`; `perm`: a permutation of `0..B`. Returns `[B, ...]`.
pub fn mix<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>, lambda: f32, perm: &[usize]) -> Tensor<B, D> {
    if lambda == 1.0 {
        return a;
    }
    let device = b.device();
    let b_perm = b.select(0, index_tensor::<B>(perm, &device));
    a.mul_scalar(lambda) + b_perm.mul_scalar(1.0 - lambda)
}

/// The smallest temperature the contrastive terms accept. They evaluate `exp(s - 1/tau)` for
/// similarities `s` of unit rows, so in `[-1/tau, 1/tau]`, and the smallest value, `exp(-2/tau)`,
/// must stay a normal f32: at `tau = 0.025` it is `exp(-80)`, and f32 ends near `exp(-87)`.
pub const MIN_TAU: f64 = 0.025;

/// The joint side of every contrastive term of one batch: z_M (`[B, d]`), the temperature, and
/// the row sums of `exp(z_M z_M^T / tau - 1/tau)` without the diagonal (`[B, 1]`).
///
/// Each term's `[2B, 2B]` matrix `S = [z_M; z~][z_M; z~]^T / tau` (docs/M3IXUP.md section 1) has
/// four `B x B` blocks: `z_M z_M^T` (the same in every term of the batch: computed here, once),
/// `A = z_M z~^T`, its transpose, and `z~ z~^T`. Because the rows are unit vectors (g normalises
/// them; the primitives require rows of norm at most 1), every entry lies in `[-1/tau, 1/tau]`
/// and one constant shift, `1/tau`, keeps every `exp` finite. With one shift for the whole matrix,
/// the rows `B + k` read the exponentials of `A` by column: each term exponentiates two `B x B`
/// blocks instead of a `[2B, 2B]` matrix, and gathers no targets from it (see [`Self::soft_nce`]).
#[derive(Clone, Debug)]
pub struct Anchor<B: Backend> {
    z: Tensor<B, 2>,
    tau: f32,
    /// The block form's shared part (flex); `None` where each term evaluates its `[2B, 2B]`
    /// matrix ([`uses_contrastive_blocks`], [`full_matrix_soft_nce`]).
    joint_block: Option<JointBlock<B>>,
}

/// What the block form shares between the terms of a batch.
#[derive(Clone, Debug)]
struct JointBlock<B: Backend> {
    /// 1 off the diagonal, 0 on it, `[B, B]`.
    off_diagonal: Tensor<B, 2>,
    /// `sum_{j != k} exp(z_M^k . z_M^j / tau - 1/tau)`, `[B, 1]`.
    sums: Tensor<B, 2>,
}

impl<B: Backend> Anchor<B> {
    /// `z_joint`: z_M, `[B, d]`, rows of norm at most 1. Panics when `tau < MIN_TAU`
    /// (configs are checked before: [`M3ixupLossConfig::validate`]).
    pub fn new(z_joint: Tensor<B, 2>, tau: f32) -> Self {
        assert!(
            tau as f64 >= MIN_TAU,
            "the contrastive temperature is {tau}; it must be at least {MIN_TAU} (f32 range)"
        );
        let device = z_joint.device();
        let joint_block = uses_contrastive_blocks::<B>(&device).then(|| {
            let b = z_joint.dims()[0];
            let off_diagonal = Tensor::<B, 2>::ones([b, b], &device) - Tensor::eye(b, &device);
            let sums = shifted_exp_off_diagonal(z_joint.clone(), &off_diagonal, tau).sum_dim(1);
            JointBlock { off_diagonal, sums }
        });
        Self { z: z_joint, tau, joint_block }
    }

    /// One modality's GMC term: `mean over 2B rows of (logsumexp(row of S without diagonal) -
    /// pos)`, the positive of rows k and B+k being `z_M^k . z_u^k / tau`.
    ///
    /// `z_other`: `[B, d]`, rows of norm at most 1. Returns `[1]`.
    pub fn info_nce(&self, z_other: Tensor<B, 2>) -> Tensor<B, 1> {
        self.soft_nce_targets(z_other, 1.0, None)
    }

    /// The GMC loss of every modality: `sum over u of info_nce(z_u)`. Returns `[1]`.
    pub fn gmc(&self, z_uni: &[Tensor<B, 2>]) -> Tensor<B, 1> {
        let device = self.z.device();
        z_uni
            .iter()
            .map(|z_u| self.info_nce(z_u.clone()))
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1], &device))
    }

    /// SoftNCE (docs/M3IXUP.md section 3): the GMC term with `z_tilde` (a mixed view) in place
    /// of `z_u` and soft targets. With `Lg` the row log-softmax of `S` (diagonal removed), the
    /// targets put, for every k, `lambda` on `(k, B+k)` and `(B+k, k)`, `1 - lambda` on
    /// `(k, B+pi^-1(k))` and `(B+k, pi(k))`; the loss is `-(1/2B) sum T * Lg`. With `lambda = 1`
    /// or `pi = id` it equals [`Self::info_nce`].
    ///
    /// Every row's targets sum to 1, so the loss is the mean row log-sum-exp minus the mean
    /// target logit. The four target logits of k are `A_kk` twice, `A_{k, pi^-1(k)}` and
    /// `A_{pi(k), k}`, and the last summed over k is the third summed over k: the targets
    /// cost `mean_k (lambda z_M^k . z~^k + (1 - lambda) z_M^k . z~^{pi^-1(k)}) / tau`, two dot
    /// products per row.
    ///
    /// `z_tilde`: `[B, d]`, rows of norm at most 1; `perm`: a permutation of `0..B`. Returns `[1]`.
    pub fn soft_nce(&self, z_tilde: Tensor<B, 2>, lambda: f32, perm: &[usize]) -> Tensor<B, 1> {
        self.soft_nce_targets(z_tilde, lambda, Some(perm))
    }

    fn soft_nce_targets(&self, z_tilde: Tensor<B, 2>, lambda: f32, perm: Option<&[usize]>) -> Tensor<B, 1> {
        let b = self.z.dims()[0];
        assert_eq!(z_tilde.dims()[0], b, "the view must have the anchor's batch size");
        let Some(joint) = &self.joint_block else {
            return full_matrix_soft_nce(self.z.clone(), z_tilde, lambda, perm, self.tau);
        };
        let shift = 1.0 / self.tau;
        // Row sums of each half of S without its diagonal, shifted by 1/tau: rows k read the
        // z_M z_M^T block and A; rows B+k read A by column and the z~ z~^T block.
        let cross = shifted_exp(self.z.clone(), z_tilde.clone(), self.tau); // [B, B]
        let top = joint.sums.clone() + cross.clone().sum_dim(1); // [B, 1]
        let view = shifted_exp_off_diagonal(z_tilde.clone(), &joint.off_diagonal, self.tau);
        let bottom = cross.sum_dim(0).reshape([b, 1]) + view.sum_dim(1);
        let mean_lse = (top.log().mean() + bottom.log().mean()).mul_scalar(0.5).add_scalar(shift); // [1]
        let own = (self.z.clone() * z_tilde.clone()).sum_dim(1); // [B, 1]: z_M^k . z~^k
        let targets = match perm {
            Some(perm) if lambda != 1.0 => {
                assert_eq!(perm.len(), b, "the permutation must cover the batch");
                let inv = index_tensor::<B>(&inverse_permutation(perm), &self.z.device());
                let other = (self.z.clone() * z_tilde.select(0, inv)).sum_dim(1); // z_M^k . z~^{pi^-1(k)}
                own.mul_scalar(lambda) + other.mul_scalar(1.0 - lambda)
            }
            _ => own,
        };
        mean_lse - targets.mean().div_scalar(self.tau)
    }
}

impl<B: AutodiffBackend> Anchor<B> {
    /// The same anchor cut from the autodiff graph (the inner steps' stop-grad z_M).
    pub fn detached(&self) -> Self {
        let joint_block = self
            .joint_block
            .as_ref()
            .map(|j| JointBlock { off_diagonal: j.off_diagonal.clone().detach(), sums: j.sums.clone().detach() });
        Self { z: self.z.clone().detach(), tau: self.tau, joint_block }
    }

    /// The same anchor on the inner (non-autodiff) backend.
    pub fn inner(&self) -> Anchor<B::InnerBackend> {
        let joint_block = self
            .joint_block
            .as_ref()
            .map(|j| JointBlock { off_diagonal: j.off_diagonal.clone().inner(), sums: j.sums.clone().inner() });
        Anchor { z: self.z.clone().inner(), tau: self.tau, joint_block }
    }
}

/// Whether the contrastive terms use [`Anchor`]'s block form on this backend: on flex, where it
/// is 1.2x the training speed of the main config (README, "CPU learner speed"). On burn 0.21's
/// LibTorch and wgpu backends the full loss in block form disagreed with flex's
/// (tests/backends.rs, `m3ixup_loss_agrees_with_flex`: the head's gradient on LibTorch, the GMC
/// and manifold terms on wgpu), though each primitive agreed alone; those backends keep the
/// `[2B, 2B]` form, which the same test checks against flex's blocks.
pub fn uses_contrastive_blocks<B: Backend>(device: &B::Device) -> bool {
    B::name(device).contains("flex")
}

/// SoftNCE on the whole `[2B, 2B]` matrix (docs/M3IXUP.md section 3, as written): the row
/// log-sum-exp with the row's own maximum as shift, the targets gathered from the matrix.
/// `perm: None` or `lambda = 1` gives the GMC term.
fn full_matrix_soft_nce<B: Backend>(
    z_joint: Tensor<B, 2>,
    z_tilde: Tensor<B, 2>,
    lambda: f32,
    perm: Option<&[usize]>,
    tau: f32,
) -> Tensor<B, 1> {
    let b = z_joint.dims()[0];
    let device = z_joint.device();
    let n = 2 * b;
    let z = Tensor::cat(vec![z_joint, z_tilde], 0); // [2B, d]
    let s = z.clone().div_scalar(tau).matmul(z.transpose()); // [2B, 2B]
    let s = s.mask_fill(Tensor::<B, 2, Bool>::diag_mask([n, n], 0, &device).bool_not(), -1.0e9);
    let max = s.clone().max_dim(1).detach(); // [2B, 1]
    let lse = (s.clone() - max.clone()).exp().sum_dim(1).log() + max; // [2B, 1]
                                                                      // Column of the lambda target: B+k for row k, k for row B+k.
    let own: Vec<usize> = (0..b).map(|k| b + k).chain(0..b).collect();
    let own = (s.clone().gather(1, index_tensor::<B>(&own, &device).reshape([n, 1])) - lse.clone()).mean();
    let perm = match perm {
        Some(perm) if lambda != 1.0 => perm,
        _ => return own.neg(),
    };
    assert_eq!(perm.len(), b, "the permutation must cover the batch");
    // Column of the 1 - lambda target: B + pi^-1(k) for row k, pi(k) for row B+k.
    let other: Vec<usize> = inverse_permutation(perm).iter().map(|&j| b + j).chain(perm.iter().copied()).collect();
    let other = (s.gather(1, index_tensor::<B>(&other, &device).reshape([n, 1])) - lse).mean();
    (own.mul_scalar(lambda) + other.mul_scalar(1.0 - lambda)).neg()
}

/// `exp(a a^T / tau - 1/tau)` with the diagonal set to 0 (`off_diagonal`): `[B, d] -> [B, B]`.
fn shifted_exp_off_diagonal<B: Backend>(a: Tensor<B, 2>, off_diagonal: &Tensor<B, 2>, tau: f32) -> Tensor<B, 2> {
    shifted_exp(a.clone(), a, tau) * off_diagonal.clone()
}

/// `exp(a b^T / tau - 1/tau)`: `[B, d] x [B, d] -> [B, B]`, every entry in `(0, 1]` for rows of
/// norm at most 1. (1/tau scales the `[B, d]` factor rather than the `[B, B]` product.)
fn shifted_exp<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>, tau: f32) -> Tensor<B, 2> {
    a.div_scalar(tau).matmul(b.transpose()).sub_scalar(1.0 / tau).exp()
}

/// The GMC loss (Poklukar et al. 2022, the `infonce` of GMC's code):
/// `L = mean over 2B rows of sum over u of -log(exp(pos) / denominator)`, where for modality u
/// `Z = [z_M; z_u]` (`[2B, d]`), `S = Z Z^T / tau` without its diagonal, the positive of rows k
/// and B+k is `z_M^k . z_u^k / tau` and the denominator sums the row (positive included).
///
/// `z_joint`: `[B, d]`; `z_uni`: one `[B, d]` per modality; rows of norm at most 1. Returns `[1]`.
/// [`Anchor::gmc`], for a caller without an anchor.
pub fn gmc_infonce<B: Backend>(z_joint: Tensor<B, 2>, z_uni: &[Tensor<B, 2>], tau: f32) -> Tensor<B, 1> {
    Anchor::new(z_joint, tau).gmc(z_uni)
}

/// One modality's GMC term ([`Anchor::info_nce`]). `z_joint`, `z_other`: `[B, d]`. Returns `[1]`.
pub fn info_nce<B: Backend>(z_joint: Tensor<B, 2>, z_other: Tensor<B, 2>, tau: f32) -> Tensor<B, 1> {
    Anchor::new(z_joint, tau).info_nce(z_other)
}

/// SoftNCE ([`Anchor::soft_nce`]). `z_joint`, `z_tilde`: `[B, d]`; `perm`: a permutation of
/// `0..B`. Returns `[1]`.
pub fn soft_nce<B: Backend>(
    z_joint: Tensor<B, 2>,
    z_tilde: Tensor<B, 2>,
    lambda: f32,
    perm: &[usize],
    tau: f32,
) -> Tensor<B, 1> {
    Anchor::new(z_joint, tau).soft_nce(z_tilde, lambda, perm)
}

/// Indices as a `[len]` Int tensor, for `select`, `gather` and `select_assign`.
pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [indices.len()]), device)
}

/// A permutation of `0..n` drawn from its own seed (the seed is what the report records).
pub fn permutation_from_seed(seed: u64, n: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut StdRng::seed_from_u64(seed));
    perm
}

/// `inv[perm[k]] = k`.
pub fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inv[p] = k;
    }
    inv
}

/// Which way an inner step moves its detached copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDirection {
    /// Gradient descent on the inner loss (adapting, L_adapt).
    Descend,
    /// Gradient ascent on the inner loss (exploring, L_mix).
    Ascend,
}

/// The result of [`inner_step`]: the moved copy and the inner loss before and after, all on the
/// inner (non-autodiff) backend.
#[derive(Clone, Debug)]
pub struct InnerStep<B: AutodiffBackend> {
    /// The moved copy v, `[B, F]`; carries no gradient.
    pub v: Tensor<B::InnerBackend, 2>,
    /// Inner loss at the start, `[1]`.
    pub loss_before: Tensor<B::InnerBackend, 1>,
    /// Inner loss at the end, `[1]`.
    pub loss_after: Tensor<B::InnerBackend, 1>,
}

/// Normalised gradient steps on a detached copy of `start` (docs/M3IXUP.md section 3, L_adapt and
/// L_mix): `v <- v -/+ eta * ||start_k|| * G_k / ||G_k||` per row k, where G is the gradient with
/// respect to v of `SoftNCE(z_M, g(v); lambda, pi)`, with g the head's parameters detached and
/// the anchor detached (stop-grad z_M). `v` starts as a fresh autodiff leaf
/// (`start.detach().require_grad()`); each step's update runs on the inner backend, so nothing of
/// the inner problem reaches the outer graph or the parameters' gradients.
///
/// `start`: `[B, F]`; `perm`: a permutation of `0..B`.
#[allow(clippy::too_many_arguments)]
pub fn inner_step<B: AutodiffBackend>(
    head: &ProjectionHead<B>,
    start: Tensor<B, 2>,
    anchor: &Anchor<B>,
    lambda: f32,
    perm: &[usize],
    eta: f32,
    steps: usize,
    direction: StepDirection,
) -> InnerStep<B> {
    let head = head.detached();
    let anchor = anchor.detached();
    let start = start.inner();
    let sign = match direction {
        StepDirection::Descend => -1.0,
        StepDirection::Ascend => 1.0,
    };
    // eta is relative to each sample's norm, so the step is scale-free (docs/M3IXUP.md: 0.05 * ||h||).
    let radius = start.clone().square().sum_dim(1).sqrt().mul_scalar(eta * sign); // [B, 1]
    let mut v = start;
    let mut loss_before = None;
    for _ in 0..steps {
        let leaf = Tensor::<B, 2>::from_inner(v.clone()).require_grad();
        let loss = anchor.soft_nce(head.forward(leaf.clone()), lambda, perm);
        let grads = loss.backward();
        let g = leaf.grad(&grads).expect("the inner loss depends on its leaf"); // [B, F]
        loss_before.get_or_insert_with(|| loss.inner());
        let g_norm = g.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // [B, 1]
        v = v + g.div(g_norm).mul(radius.clone());
    }
    let loss_after = anchor.inner().soft_nce(head.valid().forward(v.clone()), lambda, perm);
    let loss_before = loss_before.unwrap_or_else(|| loss_after.clone());
    InnerStep { v, loss_before, loss_after }
}

/// `start + stopgrad(v - start)`: the value of v, the gradient of `start` (straight-through).
fn straight_through<B: AutodiffBackend>(start: Tensor<B, 2>, v: Tensor<B::InnerBackend, 2>) -> Tensor<B, 2> {
    let delta = Tensor::<B, 2>::from_inner(v - start.clone().inner());
    start + delta
}

// ---------------------------------------------------------------------------------------------
// The M3ixup terms
// ---------------------------------------------------------------------------------------------

/// The head over several `[B, F]` views at once (one `[k B, F]` pass): `k x [B, d]`.
pub fn project_views<B: Backend>(encoder: &M3ixupEncoder<B>, views: Vec<Tensor<B, 2>>) -> Vec<Tensor<B, 2>> {
    let k = views.len();
    let Some(b) = views.first().map(|v| v.dims()[0]) else { return Vec::new() };
    let z = encoder.project(Tensor::cat(views, 0));
    (0..k).map(|i| z.clone().narrow(0, i * b, b)).collect()
}

/// `sum_u w_u h_u`: `n x [B, F]` and `n` weights -> `[B, F]` (h_mix of L_adapt).
pub fn weighted_sum<B: Backend>(h: &[Tensor<B, 2>], w: &[f32]) -> Tensor<B, 2> {
    assert_eq!(h.len(), w.len(), "one weight per modality");
    h.iter().zip(w).map(|(h, &w)| h.clone().mul_scalar(w)).reduce(|a, c| a + c).expect("at least one modality")
}

fn sum_terms<B: Backend>(terms: impl IntoIterator<Item = Tensor<B, 1>>) -> Tensor<B, 1> {
    terms.into_iter().reduce(|a, c| a + c).expect("at least one term")
}

/// L_in = sum_u SoftNCE(z_M, g(f_u(mix(x_u, x_u, lambda, pi))); lambda, pi): mixup of each
/// modality's raw inputs (before f_u). `batch`: `n` modalities of `B` rows; `anchor`: z_M of the
/// clean batch. Returns `[1]`.
pub fn input_mixup_loss<B: Backend>(
    encoder: &M3ixupEncoder<B>,
    batch: &MultimodalInput<B>,
    anchor: &Anchor<B>,
    lambda: f32,
    perm: &[usize],
) -> Tensor<B, 1> {
    sum_terms(batch.modalities.iter().enumerate().map(|(u, x)| {
        let x_mix = x.clone().map(|x| mix(x.clone(), x, lambda, perm), |x| mix(x.clone(), x, lambda, perm));
        let z_tilde = encoder.project(encoder.unimodal_feature(u, x_mix));
        anchor.soft_nce(z_tilde, lambda, perm)
    }))
}

/// [`input_mixup_loss`] from the clean batch's first trunk layers (`Features::first_layers`):
/// the first layer is affine, so mixing its outputs equals running the mixed inputs through it
/// ([`FirstLayer`]), and only the rest of each trunk runs on the mixed batch. The same value and
/// gradients as [`input_mixup_loss`] (a test checks both), at about half the trunk's cost.
pub fn input_mixup_loss_from_first_layers<B: Backend>(
    encoder: &M3ixupEncoder<B>,
    first_layers: &[FirstLayer<B>],
    anchor: &Anchor<B>,
    lambda: f32,
    perm: &[usize],
) -> Tensor<B, 1> {
    sum_terms(first_layers.iter().enumerate().map(|(u, first)| {
        let processor = &encoder.unimodal[u];
        let z_tilde = encoder.project(processor.proj.forward(processor.trunk.rest(first.mix(lambda, perm))));
        anchor.soft_nce(z_tilde, lambda, perm)
    }))
}

/// L_man = sum_u SoftNCE(z_M, g(mix(h_u, h_u, lambda, pi)); lambda, pi): mixup of each h_u.
/// `h_uni`: `n x [B, F]`. Returns `[1]`.
pub fn manifold_mixup_loss<B: Backend>(
    encoder: &M3ixupEncoder<B>,
    h_uni: &[Tensor<B, 2>],
    anchor: &Anchor<B>,
    lambda: f32,
    perm: &[usize],
) -> Tensor<B, 1> {
    let mixed = h_uni.iter().map(|h| mix(h.clone(), h.clone(), lambda, perm)).collect();
    sum_terms(project_views(encoder, mixed).into_iter().map(|z| anchor.soft_nce(z, lambda, perm)))
}

/// The adapted view of `adapt.mode = "step"`: normalised descent steps on a detached copy v of
/// `h_mix` toward stop-grad(z_M), then `h_ad = h_mix + stopgrad(v - h_mix)` (gradients still
/// reach the f_u through h_mix). `h_mix`: `[B, F]`. Returns h_ad `[B, F]` and the inner step.
pub fn adapt_step_view<B: AutodiffBackend>(
    encoder: &M3ixupEncoder<B>,
    h_mix: Tensor<B, 2>,
    anchor: &Anchor<B>,
    adapt: &AdaptConfig,
) -> (Tensor<B, 2>, InnerStep<B>) {
    let identity: Vec<usize> = (0..h_mix.dims()[0]).collect();
    let step = inner_step(
        &encoder.head,
        h_mix.clone(),
        anchor,
        1.0,
        &identity,
        adapt.eta as f32,
        adapt.steps,
        StepDirection::Descend,
    );
    (straight_through(h_mix, step.v.clone()), step)
}

/// The adapted views of `adapt.mode = "bridge"`: `h_ad_u = lambda_b h_u + (1 - lambda_b) h_M` for
/// each modality. `h_uni`: `n x [B, F]`; `h_joint`: `[B, F]`. Returns `n x [B, F]`.
pub fn bridge_views<B: Backend>(h_uni: &[Tensor<B, 2>], h_joint: Tensor<B, 2>, lambda_b: f32) -> Vec<Tensor<B, 2>> {
    h_uni.iter().map(|h| h.clone().mul_scalar(lambda_b) + h_joint.clone().mul_scalar(1.0 - lambda_b)).collect()
}

/// L_adapt = sum over the adapted views of SoftNCE(z_M, g(h_ad); 1, id) (= InfoNCE).
/// `views`: `k x [B, F]`. Returns `[1]`.
pub fn adapt_loss<B: Backend>(encoder: &M3ixupEncoder<B>, anchor: &Anchor<B>, views: &[Tensor<B, 2>]) -> Tensor<B, 1> {
    sum_terms(project_views(encoder, views.to_vec()).into_iter().map(|z| anchor.info_nce(z)))
}

/// One exploring problem: where the ascent starts and the soft targets of its alignment.
#[derive(Clone, Debug)]
pub struct ExploreStartView<B: Backend> {
    /// h_start, `[B, F]` (differentiable: h_ex passes its gradient through).
    pub h: Tensor<B, 2>,
    /// lambda' of the targets (1 for an intra-sample start).
    pub lambda: f32,
    /// pi' of the targets (the identity for an intra-sample start).
    pub perm: Vec<usize>,
}

/// L_mix = sum over the starts of SoftNCE(z_M, g(h_ex); lambda', pi'), where
/// `h_ex = h_start + stopgrad(v - h_start)` and v comes from normalised gradient-ASCENT steps on
/// a detached copy of h_start against the same SoftNCE with z_M stopped. Returns `[1]` and the
/// inner steps.
pub fn explore_loss<B: AutodiffBackend>(
    encoder: &M3ixupEncoder<B>,
    anchor: &Anchor<B>,
    starts: Vec<ExploreStartView<B>>,
    explore: &ExploreConfig,
) -> (Tensor<B, 1>, Vec<InnerStep<B>>) {
    let mut steps = Vec::with_capacity(starts.len());
    let loss = sum_terms(starts.into_iter().map(|s| {
        let step = inner_step(
            &encoder.head,
            s.h.clone(),
            anchor,
            s.lambda,
            &s.perm,
            explore.eta as f32,
            explore.steps,
            StepDirection::Ascend,
        );
        let h_ex = straight_through(s.h, step.v.clone());
        steps.push(step);
        anchor.soft_nce(encoder.project(h_ex), s.lambda, &s.perm)
    }));
    (loss, steps)
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// A config value that is out of range, or an unknown loss term; `field` names the key.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("m3ixup loss config `{field}`: {reason}")]
pub struct LossConfigError {
    pub field: String,
    pub reason: String,
}

impl LossConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// The terms of the M3ixup loss, by their config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossTerm {
    /// `gmc`: L_GMC.
    Gmc,
    /// `input`: L_in, unimodal input mixup.
    Input,
    /// `manifold`: L_man, unimodal manifold mixup.
    Manifold,
    /// `adapt`: L_adapt, the adapting multimodal mixup.
    Adapt,
    /// `explore`: L_mix, the exploring multimodal mixup.
    Explore,
}

impl LossTerm {
    pub const ALL: [LossTerm; 5] =
        [LossTerm::Gmc, LossTerm::Input, LossTerm::Manifold, LossTerm::Adapt, LossTerm::Explore];

    pub fn name(self) -> &'static str {
        match self {
            LossTerm::Gmc => "gmc",
            LossTerm::Input => "input",
            LossTerm::Manifold => "manifold",
            LossTerm::Adapt => "adapt",
            LossTerm::Explore => "explore",
        }
    }
}

impl fmt::Display for LossTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossTerm {
    type Err = LossConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossTerm::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            LossConfigError::new(
                s,
                format!("unknown loss term `{s}` (expected one of {})", LossTerm::ALL.map(|t| t.name()).join(", ")),
            )
        })
    }
}

/// Switch and weight of a term without options of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TermConfig {
    /// Whether the term is computed and added to the total.
    pub enabled: bool,
    /// Its weight in the total (>= 0).
    pub weight: f64,
}

impl Default for TermConfig {
    fn default() -> Self {
        Self { enabled: true, weight: 1.0 }
    }
}

/// How L_adapt builds its adapted view h_ad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptMode {
    /// `h_mix = sum_u w_u h_u` (w ~ Dirichlet(alpha), Beta for two modalities), then normalised
    /// gradient-descent steps toward stop-grad(z_M); `h_ad = h_mix + stopgrad(v - h_mix)`.
    #[default]
    Step,
    /// `h_ad_u = lambda_b h_u + (1 - lambda_b) h_M` for each modality u (lambda_b ~ Beta(alpha,
    /// alpha)), no inner step; L_adapt sums over u.
    Bridge,
}

/// Where the exploring step starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExploreStart {
    /// From the adapted view(s) h_ad (one in `step` mode, one per modality in `bridge` mode); the
    /// alignment then has hard targets (lambda' = 1, pi' = id), since h_ad mixes within a sample.
    #[default]
    Adapted,
    /// From a fresh cross-sample mix `mix(h_mix, h_mix, lambda', pi')` with its own lambda' and
    /// pi', aligned with soft targets SoftNCE(z_M, g(h_ex); lambda', pi').
    Mix,
}

/// L_adapt: switch, weight and options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptConfig {
    pub enabled: bool,
    /// Weight b_ad (>= 0).
    pub weight: f64,
    /// `"step"` (inner descent step) or `"bridge"` (unimodal-joint interpolation).
    pub mode: AdaptMode,
    /// Concentration of the modality weights w (Dirichlet) and of lambda_b (Beta); > 0.
    pub alpha: f64,
    /// Step size relative to each sample's norm: `eta * ||h_mix_k||` (>= 0).
    pub eta: f64,
    /// Number of inner steps (>= 1).
    pub steps: usize,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self { enabled: true, weight: 1.0, mode: AdaptMode::Step, alpha: 1.0, eta: 0.05, steps: 1 }
    }
}

/// L_mix (exploring): switch, weight and options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExploreConfig {
    pub enabled: bool,
    /// Weight b_ex (>= 0).
    pub weight: f64,
    /// `"adapted"` (start from h_ad) or `"mix"` (a fresh cross-sample mix).
    pub start: ExploreStart,
    /// Beta(alpha, alpha) of lambda' (used by `start = "mix"`); > 0.
    pub alpha: f64,
    /// Ascent step relative to each sample's norm: `eta * ||h_start_k||` (>= 0).
    pub eta: f64,
    /// Number of inner steps (>= 1).
    pub steps: usize,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        Self { enabled: true, weight: 1.0, start: ExploreStart::Adapted, alpha: 1.0, eta: 0.05, steps: 1 }
    }
}

/// The M3ixup loss (docs/M3IXUP.md section 3). Defaults: every term on with weight 1, alpha 1,
/// tau 0.3, eta 0.05, one inner step. An unknown key (including an unknown term name) is a
/// deserialisation error naming it; [`validate`](Self::validate) checks the values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct M3ixupLossConfig {
    /// Temperature of every contrastive term (GMC: 0.3); > 0.
    pub tau: f64,
    /// Beta(alpha, alpha) of the batch's lambda, shared by L_in and L_man; > 0.
    pub alpha: f64,
    /// L_GMC.
    pub gmc: TermConfig,
    /// L_in: mixup of each modality's raw inputs.
    pub input: TermConfig,
    /// L_man: mixup of each h_u.
    pub manifold: TermConfig,
    /// L_adapt.
    pub adapt: AdaptConfig,
    /// L_mix.
    pub explore: ExploreConfig,
    /// The share of every term's gradient that reaches z_M (and h_M, in bridge mode), in
    /// [0, 1]; values are unchanged. 1 (the paper's loss): every term trains the joint processor
    /// too. 0: z_M is a constant target, and the loss trains only the unimodal encoders (toward
    /// the joint latent) and the head, leaving the joint processor to the agent's own loss, so
    /// the alignment cannot pull z_M toward what a weaker sensor carries. In between: that pull,
    /// scaled. `pretrain` rejects 0 (nothing would train the joint processor).
    pub joint_gradient: f64,
}

impl Default for M3ixupLossConfig {
    fn default() -> Self {
        Self {
            tau: 0.3,
            alpha: 1.0,
            gmc: TermConfig::default(),
            input: TermConfig::default(),
            manifold: TermConfig::default(),
            adapt: AdaptConfig::default(),
            explore: ExploreConfig::default(),
            joint_gradient: 1.0,
        }
    }
}

impl M3ixupLossConfig {
    /// The plain GMC loss (every M3ixup term off).
    pub fn gmc_only() -> Self {
        let mut c = Self::default();
        for t in [LossTerm::Input, LossTerm::Manifold, LossTerm::Adapt, LossTerm::Explore] {
            c.set_enabled(t, false);
        }
        c
    }

    pub fn enabled(&self, term: LossTerm) -> bool {
        match term {
            LossTerm::Gmc => self.gmc.enabled,
            LossTerm::Input => self.input.enabled,
            LossTerm::Manifold => self.manifold.enabled,
            LossTerm::Adapt => self.adapt.enabled,
            LossTerm::Explore => self.explore.enabled,
        }
    }

    pub fn weight(&self, term: LossTerm) -> f64 {
        match term {
            LossTerm::Gmc => self.gmc.weight,
            LossTerm::Input => self.input.weight,
            LossTerm::Manifold => self.manifold.weight,
            LossTerm::Adapt => self.adapt.weight,
            LossTerm::Explore => self.explore.weight,
        }
    }

    pub fn set_enabled(&mut self, term: LossTerm, on: bool) {
        match term {
            LossTerm::Gmc => self.gmc.enabled = on,
            LossTerm::Input => self.input.enabled = on,
            LossTerm::Manifold => self.manifold.enabled = on,
            LossTerm::Adapt => self.adapt.enabled = on,
            LossTerm::Explore => self.explore.enabled = on,
        }
    }

    pub fn set_weight(&mut self, term: LossTerm, weight: f64) {
        match term {
            LossTerm::Gmc => self.gmc.weight = weight,
            LossTerm::Input => self.input.weight = weight,
            LossTerm::Manifold => self.manifold.weight = weight,
            LossTerm::Adapt => self.adapt.weight = weight,
            LossTerm::Explore => self.explore.weight = weight,
        }
    }

    /// Enables exactly the named terms (for example from a `terms = ["gmc", "adapt"]` list);
    /// an unknown name is an error naming it.
    pub fn enable_only<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LossConfigError> {
        let terms = names.iter().map(|n| n.as_ref().parse()).collect::<Result<Vec<LossTerm>, _>>()?;
        for t in LossTerm::ALL {
            self.set_enabled(t, terms.contains(&t));
        }
        Ok(())
    }

    /// Checks every value: tau >= [`MIN_TAU`], every alpha > 0, weights and etas finite and
    /// >= 0, steps >= 1.
    pub fn validate(&self) -> Result<(), LossConfigError> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(LossConfigError::new(field, format!("must be a finite number > 0, got {v}")))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(LossConfigError::new(field, format!("must be a finite number >= 0, got {v}")))
            }
        };
        if !(self.tau.is_finite() && self.tau >= MIN_TAU) {
            let reason =
                format!("must be a finite number >= {MIN_TAU} (the f32 range of exp(-2 / tau)), got {}", self.tau);
            return Err(LossConfigError::new("tau", reason));
        }
        positive("alpha", self.alpha)?;
        if !(0.0..=1.0).contains(&self.joint_gradient) {
            return Err(LossConfigError::new(
                "joint_gradient",
                format!("must be a share in [0, 1], got {}", self.joint_gradient),
            ));
        }
        for t in LossTerm::ALL {
            non_negative(&format!("{t}.weight"), self.weight(t))?;
        }
        positive("adapt.alpha", self.adapt.alpha)?;
        positive("explore.alpha", self.explore.alpha)?;
        non_negative("adapt.eta", self.adapt.eta)?;
        non_negative("explore.eta", self.explore.eta)?;
        if self.adapt.steps == 0 {
            return Err(LossConfigError::new("adapt.steps", "must be at least 1"));
        }
        if self.explore.steps == 0 {
            return Err(LossConfigError::new("explore.steps", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether the adapted view h_ad has to be built (for L_adapt, or as L_mix's start).
    fn needs_adapted(&self) -> bool {
        self.adapt.enabled || (self.explore.enabled && self.explore.start == ExploreStart::Adapted)
    }
}

// ---------------------------------------------------------------------------------------------
// The total
// ---------------------------------------------------------------------------------------------

/// Every random quantity of one evaluation of the loss. All of them are drawn whatever terms are
/// enabled, so switching a term off leaves the others' draws (and values) unchanged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixupDraws {
    /// lambda ~ Beta(alpha, alpha), shared by L_in and L_man.
    pub lambda: f32,
    /// Seed of pi (see [`permutation_from_seed`]).
    pub perm_seed: u64,
    /// pi, a permutation of the batch.
    pub perm: Vec<usize>,
    /// w ~ Dirichlet(adapt.alpha) over the modalities: h_mix = sum_u w_u h_u.
    pub adapt_weights: Vec<f32>,
    /// lambda_b ~ Beta(adapt.alpha, adapt.alpha) of `adapt.mode = "bridge"`.
    pub bridge_lambda: f32,
    /// lambda' ~ Beta(explore.alpha, explore.alpha) of `explore.start = "mix"`.
    pub explore_lambda: f32,
    /// Seed of pi'.
    pub explore_perm_seed: u64,
    /// pi'.
    pub explore_perm: Vec<usize>,
}

impl MixupDraws {
    /// Draws from `rng` in a fixed order: lambda, pi's seed, w (one Gamma per modality),
    /// lambda_b, lambda', pi''s seed. Panics on an invalid alpha (run `validate` first).
    pub fn sample<R: Rng + ?Sized>(rng: &mut R, batch: usize, modalities: usize, config: &M3ixupLossConfig) -> Self {
        let beta = |a: f64| Beta::new(a, a).expect("alpha > 0 (M3ixupLossConfig::validate)");
        let lambda = beta(config.alpha).sample(rng) as f32;
        let perm_seed: u64 = rng.gen();
        let gamma = Gamma::new(config.adapt.alpha, 1.0).expect("adapt.alpha > 0 (M3ixupLossConfig::validate)");
        let g: Vec<f64> = (0..modalities).map(|_| gamma.sample(rng)).collect();
        let total: f64 = g.iter().sum();
        let adapt_weights = if total > 0.0 {
            g.iter().map(|v| (v / total) as f32).collect()
        } else {
            vec![1.0 / modalities as f32; modalities]
        };
        let bridge_lambda = beta(config.adapt.alpha).sample(rng) as f32;
        let explore_lambda = beta(config.explore.alpha).sample(rng) as f32;
        let explore_perm_seed: u64 = rng.gen();
        Self {
            lambda,
            perm_seed,
            perm: permutation_from_seed(perm_seed, batch),
            adapt_weights,
            bridge_lambda,
            explore_lambda,
            explore_perm_seed,
            explore_perm: permutation_from_seed(explore_perm_seed, batch),
        }
    }
}

/// Inner-loss values of one inner problem (before and after its steps).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InnerReport {
    pub before: f32,
    pub after: f32,
}

/// What one evaluation of [`m3ixup_loss`] computed: the weighted total, every term's unweighted
/// value (`None` when switched off), and the draws.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct M3ixupReport {
    pub total: f32,
    pub gmc: Option<f32>,
    pub input: Option<f32>,
    pub manifold: Option<f32>,
    pub adapt: Option<f32>,
    pub explore: Option<f32>,
    /// Inner descent of the adapting step (`mode = "step"`), when h_ad was built.
    pub adapt_inner: Vec<InnerReport>,
    /// Inner ascent of the exploring step, one per start, when L_mix is on.
    pub explore_inner: Vec<InnerReport>,
    pub draws: MixupDraws,
}

impl M3ixupReport {
    /// The unweighted value of a term (`None` when it was switched off).
    pub fn term(&self, term: LossTerm) -> Option<f32> {
        match term {
            LossTerm::Gmc => self.gmc,
            LossTerm::Input => self.input,
            LossTerm::Manifold => self.manifold,
            LossTerm::Adapt => self.adapt,
            LossTerm::Explore => self.explore,
        }
    }

    /// Namespaced metrics: `losses/m3ixup`, `losses/m3ixup_<term>`, `m3ixup/lambda`, ...
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = vec![("losses/m3ixup".to_string(), self.total as f64)];
        for t in LossTerm::ALL {
            if let Some(v) = self.term(t) {
                m.push((format!("losses/m3ixup_{t}"), v as f64));
            }
        }
        m.push(("m3ixup/lambda".into(), self.draws.lambda as f64));
        m.push(("m3ixup/explore_lambda".into(), self.draws.explore_lambda as f64));
        let mean =
            |v: &[InnerReport], f: fn(&InnerReport) -> f32| v.iter().map(|r| f(r) as f64).sum::<f64>() / v.len() as f64;
        for (name, inner) in [("adapt", &self.adapt_inner), ("explore", &self.explore_inner)] {
            if !inner.is_empty() {
                m.push((format!("m3ixup/{name}_inner_before"), mean(inner, |r| r.before)));
                m.push((format!("m3ixup/{name}_inner_after"), mean(inner, |r| r.after)));
            }
        }
        m
    }
}

/// The weighted M3ixup loss of a training batch (every modality present), with lambda and the
/// permutations drawn from `rng`. Returns the total (`[1]`, differentiable with respect to every
/// encoder parameter that an enabled term reaches) and its report. See
/// [`m3ixup_loss_with_draws`].
pub fn m3ixup_loss<B: AutodiffBackend, R: Rng + ?Sized>(
    encoder: &M3ixupEncoder<B>,
    batch: &MultimodalInput<B>,
    config: &M3ixupLossConfig,
    rng: &mut R,
) -> (Tensor<B, 1>, M3ixupReport) {
    let draws = MixupDraws::sample(rng, batch.batch_size(), encoder.num_modalities(), config);
    m3ixup_loss_with_draws(encoder, batch, config, draws)
}

/// The weighted M3ixup loss for given draws (docs/M3IXUP.md section 3):
///
/// - L_GMC = sum_u InfoNCE(z_M, z_u);
/// - L_in = sum_u SoftNCE(z_M, g(f_u(mix(x_u, x_u, lambda, pi))); lambda, pi);
/// - L_man = sum_u SoftNCE(z_M, g(mix(h_u, h_u, lambda, pi)); lambda, pi);
/// - L_adapt = SoftNCE(z_M, g(h_ad); 1, id) (summed over u in bridge mode);
/// - L_mix = SoftNCE(z_M, g(h_ex); targets) with h_ex from `explore.steps` normalised ascent
///   steps, started from h_ad (targets 1, id) or from a fresh mix of h_mix (targets lambda', pi').
///
/// h_u and z_M are computed once and shared by every term; z_M is not stopped in the outer
/// terms, so they train the joint processor too (scaled by `joint_gradient`).
pub fn m3ixup_loss_with_draws<B: AutodiffBackend>(
    encoder: &M3ixupEncoder<B>,
    batch: &MultimodalInput<B>,
    config: &M3ixupLossConfig,
    draws: MixupDraws,
) -> (Tensor<B, 1>, M3ixupReport) {
    // h_u, h_M and z_M once per batch, shared by every term.
    let feats = encoder.features(batch);
    let z_m = encoder.project(feats.joint.clone());
    m3ixup_loss_on_features(encoder, feats, z_m, config, draws)
}

/// `x` with the same value and `share` of its gradient (`joint_gradient`): `share * x + (1 -
/// share) * sg(x)`; `x` itself at 1, `sg(x)` at 0.
fn scale_gradient<B: AutodiffBackend, const D: usize>(x: Tensor<B, D>, share: f64) -> Tensor<B, D> {
    if share >= 1.0 {
        x
    } else if share <= 0.0 {
        x.detach()
    } else {
        x.clone().mul_scalar(share) + x.detach().mul_scalar(1.0 - share)
    }
}

/// [`m3ixup_loss_with_draws`] on features already computed for a batch (`feats =
/// encoder.features(batch)`, `z_m = encoder.project(feats.joint)`), so a caller that also needs
/// them (the actor-critic reads z_M) runs the trunks once.
pub fn m3ixup_loss_on_features<B: AutodiffBackend>(
    encoder: &M3ixupEncoder<B>,
    feats: Features<B>,
    z_m: Tensor<B, 2>,
    config: &M3ixupLossConfig,
    draws: MixupDraws,
) -> (Tensor<B, 1>, M3ixupReport) {
    let b = z_m.dims()[0];
    let (z_m, h_m) = (scale_gradient(z_m, config.joint_gradient), scale_gradient(feats.joint, config.joint_gradient));
    let anchor = Anchor::new(z_m, config.tau as f32); // z_M's block of every term, once
    assert_eq!(draws.perm.len(), b, "draws were made for another batch size");
    let identity: Vec<usize> = (0..b).collect();
    let h_u = feats.unimodal; // n x [B, F]

    let mut terms: Vec<(LossTerm, Tensor<B, 1>)> = Vec::new();
    if config.gmc.enabled {
        terms.push((LossTerm::Gmc, anchor.gmc(&project_views(encoder, h_u.clone()))));
    }
    if config.input.enabled {
        let first = &feats.first_layers;
        terms.push((
            LossTerm::Input,
            input_mixup_loss_from_first_layers(encoder, first, &anchor, draws.lambda, &draws.perm),
        ));
    }
    if config.manifold.enabled {
        terms.push((LossTerm::Manifold, manifold_mixup_loss(encoder, &h_u, &anchor, draws.lambda, &draws.perm)));
    }
    let h_mix = weighted_sum(&h_u, &draws.adapt_weights); // [B, F]
    let mut adapt_inner = Vec::new();
    let mut h_ad: Vec<Tensor<B, 2>> = Vec::new();
    if config.needs_adapted() {
        (h_ad, adapt_inner) = match config.adapt.mode {
            AdaptMode::Step => {
                let (view, step) = adapt_step_view(encoder, h_mix.clone(), &anchor, &config.adapt);
                (vec![view], vec![step])
            }
            AdaptMode::Bridge => (bridge_views(&h_u, h_m.clone(), draws.bridge_lambda), Vec::new()),
        };
    }
    if config.adapt.enabled {
        terms.push((LossTerm::Adapt, adapt_loss(encoder, &anchor, &h_ad)));
    }
    let mut explore_inner = Vec::new();
    if config.explore.enabled {
        let starts: Vec<ExploreStartView<B>> = match config.explore.start {
            ExploreStart::Adapted => {
                h_ad.iter().map(|h| ExploreStartView { h: h.clone(), lambda: 1.0, perm: identity.clone() }).collect()
            }
            ExploreStart::Mix => {
                let (lambda, perm) = (draws.explore_lambda, draws.explore_perm.clone());
                vec![ExploreStartView { h: mix(h_mix.clone(), h_mix.clone(), lambda, &perm), lambda, perm }]
            }
        };
        let (loss, steps) = explore_loss(encoder, &anchor, starts, &config.explore);
        explore_inner = steps;
        terms.push((LossTerm::Explore, loss));
    }

    let device = anchor.z.device();
    let total = terms
        .iter()
        .map(|(t, l)| l.clone().mul_scalar(config.weight(*t) as f32))
        .reduce(|a, c| a + c)
        .unwrap_or_else(|| Tensor::zeros([1], &device));

    // One read-back for every reported number: [total, terms..., inner before/after...].
    let mut values: Vec<Tensor<B::InnerBackend, 1>> = vec![total.clone().inner()];
    values.extend(terms.iter().map(|(_, l)| l.clone().inner()));
    for step in adapt_inner.iter().chain(&explore_inner) {
        values.push(step.loss_before.clone());
        values.push(step.loss_after.clone());
    }
    let values: Vec<f32> = Tensor::cat(values, 0).into_data().convert::<f32>().to_vec().expect("f32 values");
    let mut report = M3ixupReport {
        total: values[0],
        gmc: None,
        input: None,
        manifold: None,
        adapt: None,
        explore: None,
        adapt_inner: Vec::new(),
        explore_inner: Vec::new(),
        draws,
    };
    for (i, (t, _)) in terms.iter().enumerate() {
        let v = Some(values[1 + i]);
        match t {
            LossTerm::Gmc => report.gmc = v,
            LossTerm::Input => report.input = v,
            LossTerm::Manifold => report.manifold = v,
            LossTerm::Adapt => report.adapt = v,
            LossTerm::Explore => report.explore = v,
        }
    }
    let mut rest = values[1 + terms.len()..].chunks(2).map(|c| InnerReport { before: c[0], after: c[1] });
    report.adapt_inner = rest.by_ref().take(adapt_inner.len()).collect();
    report.explore_inner = rest.collect();
    (total, report)
}
