//! Optimisation helpers burn 0.21 lacks.
//!
//! burn's `GradientClippingConfig::Norm` clips each parameter tensor's gradient on its own; RL
//! implementations (PyTorch's `clip_grad_norm_`, as used by CleanRL and Stable-Baselines3) clip
//! the norm of all gradients together, which keeps the update's direction. This is the latter.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
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
        let mut scale = Scale::<B> { grads, factor: max_norm / (total + 1e-6), ids: Vec::new(), backend: std::marker::PhantomData };
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
