//! Optimisation helpers burn 0.21 lacks.
//!
//! burn's `GradientClippingConfig::Norm` clips each parameter tensor's gradient on its own; RL
//! implementations (PyTorch's `clip_grad_norm_`, as used by CleanRL and Stable-Baselines3) clip
//! the norm of all gradients together, which keeps the update's direction. This is the latter.
//! Off-policy agents also need Polyak averaging of target networks ([`soft_update`]).

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Scales every gradient of `module` in `grads` by `min(1, max_norm / total_norm)`, where
/// `total_norm` is the L2 norm of all of them together. Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut squares = SquaredNorms::<B> { grads, sums: Vec::new() };
    module.visit(&mut squares);
    if squares.sums.is_empty() {
        return 0.0;
    }
    let total: f64 = Tensor::cat(squares.sums, 0).sum().into_scalar().elem::<f64>().sqrt();
    if total.is_finite() && total > max_norm {
        let mut scale =
            Scale::<B> { grads, factor: max_norm / (total + 1e-6), ids: Vec::new(), backend: std::marker::PhantomData };
        module.visit(&mut scale);
    }
    total
}

struct SquaredNorms<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sums: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorms<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sums.push(g.square().sum());
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    /// Parameters already scaled (a module may reach one parameter twice).
    ids: Vec<ParamId>,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
            self.ids.push(param.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<Flex>;

    fn norm_of<M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> f64 {
        let mut squares = SquaredNorms::<B> { grads, sums: Vec::new() };
        module.visit(&mut squares);
        Tensor::cat(squares.sums, 0).sum().into_scalar().elem::<f64>().sqrt()
    }

    #[test]
    fn the_global_norm_is_clipped_and_small_gradients_are_left_alone() {
        let device = Default::default();
        let layer: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<B, 2>::ones([4, 3], &device).mul_scalar(10.0);
        let loss = layer.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let before = norm_of(&layer, &grads);
        let reported = clip_grad_norm(&layer, &mut grads, 1.0);
        assert!((before - reported).abs() < 1e-6 * before && before > 1.0);
        assert!((norm_of(&layer, &grads) - 1.0).abs() < 1e-4);
        // Already below the limit: unchanged.
        let reported = clip_grad_norm(&layer, &mut grads, 5.0);
        assert!((reported - 1.0).abs() < 1e-4);
        assert!((norm_of(&layer, &grads) - 1.0).abs() < 1e-4);
    }
}

/// Polyak averaging: every parameter of `target` becomes `tau * online + (1 - tau) * target`.
/// `target` is a copy of `online` made with `valid()` (so parameters match by id), on the inner
/// backend: target networks take no gradients.
pub fn soft_update<B: AutodiffBackend, M: AutodiffModule<B>>(
    online: &M,
    target: M::InnerModule,
    tau: f64,
) -> M::InnerModule {
    let mut collect = CollectParams::<B> { values: HashMap::new() };
    online.visit(&mut collect);
    target.map(&mut Blend::<B::InnerBackend> { values: collect.values, tau })
}

struct CollectParams<B: AutodiffBackend> {
    /// Flattened online values by parameter id.
    values: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectParams<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.values.entry(param.id).or_insert_with(|| param.val().inner().flatten(0, D - 1));
    }
}

struct Blend<B: Backend> {
    values: HashMap<ParamId, Tensor<B, 1>>,
    tau: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let online = self
            .values
            .get(&id)
            .unwrap_or_else(|| panic!("target parameter {id} has no online counterpart: make targets with valid()"));
        let shape = tensor.shape();
        let blended = tensor.mul_scalar(1.0 - self.tau) + online.clone().reshape(shape).mul_scalar(self.tau);
        Param::from_mapped_value(id, blended, mapper)
    }
}

#[cfg(test)]
mod soft_update_tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;

    #[test]
    fn a_soft_update_moves_each_target_parameter_tau_of_the_way_to_the_online_one() {
        let device = Default::default();
        let online = LinearConfig::new(3, 2).init::<Autodiff<Flex>>(&device);
        let target = online.valid();
        // Online moves on (a new weight, same parameter ids); the target lags.
        let online = online.map(&mut Shift);
        let before: Vec<f32> = target.weight.val().into_data().to_vec().unwrap();
        let now: Vec<f32> = online.weight.val().inner().into_data().to_vec().unwrap();
        let updated = soft_update(&online, target, 0.25);
        let after: Vec<f32> = updated.weight.val().into_data().to_vec().unwrap();
        for ((b, n), a) in before.iter().zip(&now).zip(&after) {
            assert!((a - (0.25 * n + 0.75 * b)).abs() < 1e-6, "{a} vs {}", 0.25 * n + 0.75 * b);
        }
        // tau = 1 copies.
        let copied = soft_update(&online, updated, 1.0);
        assert_eq!(copied.weight.val().into_data().to_vec::<f32>().unwrap(), now);
    }

    /// Adds 1 to every parameter, keeping its id.
    struct Shift;

    impl<B: Backend> ModuleMapper<B> for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.add_scalar(1.0), mapper)
        }
    }
}
