//! Small spaces and batches shared by the tests (never the full 60 x 60 network, except in the
//! one shape test).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use m3ixup_agents::envs::{DType, ModalityData, ModalitySpec, Obs, ObsSpace};
use m3ixup_agents::{EncoderConfig, M3ixupEncoder, MultimodalInput, Presence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type Inner = Flex;
pub type Ad = Autodiff<Flex>;

pub const BATCH: usize = 8;

/// `{pixels: u8[2, 12, 12] in {0, 1}, sound: f32[4] in [-1, 1]}` (sorted: pixels, sound).
pub fn small_space() -> ObsSpace {
    ObsSpace::new([
        ("sound", ModalitySpec::uniform(&[4], DType::F32, -1.0, 1.0)),
        ("pixels", ModalitySpec::uniform(&[2, 12, 12], DType::U8, 0.0, 1.0)),
    ])
    .unwrap()
}

/// The small space plus `proprio: f32[3]` (sorted: pixels, proprio, sound).
pub fn three_modality_space() -> ObsSpace {
    ObsSpace::new([
        ("sound", ModalitySpec::uniform(&[4], DType::F32, -1.0, 1.0)),
        ("pixels", ModalitySpec::uniform(&[2, 12, 12], DType::U8, 0.0, 1.0)),
        ("proprio", ModalitySpec::uniform(&[3], DType::F32, -1.0, 1.0)),
    ])
    .unwrap()
}

/// Random observations of `space`, every modality present.
pub fn random_obs(space: &ObsSpace, n: usize, seed: u64) -> Vec<Obs> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            Obs::new(
                space
                    .iter()
                    .map(|(_, s)| match s.dtype {
                        DType::U8 => {
                            ModalityData::U8((0..s.numel()).map(|_| rng.gen_range(0..=s.high[0] as u8)).collect())
                        }
                        DType::F32 => {
                            ModalityData::F32((0..s.numel()).map(|i| rng.gen_range(s.low[i]..=s.high[i])).collect())
                        }
                    })
                    .collect(),
            )
        })
        .collect()
}

pub fn batch<B: Backend>(space: &ObsSpace, n: usize, seed: u64) -> (MultimodalInput<B>, Presence) {
    MultimodalInput::from_obs(space, &random_obs(space, n, seed), &Default::default()).unwrap()
}

/// The backend RNG is global (one per process) and tests run on parallel threads: every seeded
/// draw holds this lock, so a seed fixes the values.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` right after seeding the backend, with no other seeded draw in between.
pub fn seeded<B: Backend, T>(seed: u64, f: impl FnOnce(&B::Device) -> T) -> T {
    let _guard = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    B::seed(&device, seed);
    f(&device)
}

pub fn encoder<B: Backend>(space: &ObsSpace, config: &EncoderConfig, seed: u64) -> M3ixupEncoder<B> {
    seeded::<B, _>(seed, |device| config.init(space, device).unwrap())
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    values(t)[0]
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Each float parameter's gradient, flattened, in visiting order (`None`: the parameter has none).
pub struct ParamGrads<'a, B: AutodiffBackend> {
    pub grads: &'a B::Gradients,
    pub params: Vec<(usize, Option<Vec<f32>>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ParamGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let count = param.val().shape().num_elements();
        self.params.push((count, param.val().grad(self.grads).map(|g| values(g.flatten::<1>(0, D - 1)))));
    }
}

/// (element count, gradient) of each float parameter of `module` ([`ParamGrads`]).
fn param_grads<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> Vec<(usize, Option<Vec<f32>>)> {
    let mut collect = ParamGrads::<B> { grads, params: Vec::new() };
    module.visit(&mut collect);
    collect.params
}

/// `(parameters, parameters without a non-zero gradient)` of `module`.
pub fn grad_coverage<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> (usize, usize) {
    let params = param_grads(module, grads);
    let nonzero = |g: &Vec<f32>| g.iter().map(|v| v.abs()).sum::<f32>() > 0.0; // NaN counts as none
    let without_grad = params.iter().filter(|(_, g)| !g.as_ref().is_some_and(nonzero)).count();
    (params.len(), without_grad)
}

/// The gradients of `module`'s float parameters, flattened in visiting order (zeros where a
/// parameter has none).
pub fn grad_values<B: AutodiffBackend, M: Module<B>>(module: &M, grads: &B::Gradients) -> Vec<f32> {
    param_grads(module, grads).into_iter().flat_map(|(count, g)| g.unwrap_or_else(|| vec![0.0; count])).collect()
}
