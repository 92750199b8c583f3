//! Every M3ixup term by value, against the independent numpy reference
//! (`tests/fixtures/m3ixup_reference.py`, which writes `m3ixup_reference.toml`): a small
//! vector-only encoder built from its config, the fixture's weights loaded into its parameters,
//! the fixture's batch and draws (pi and pi' with a fixed point).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use m3ixup_agents::envs::{DType, ModalitySpec, ObsSpace};
use m3ixup_agents::representation::encoder::Trunk;
use m3ixup_agents::representation::losses::{
    inverse_permutation, m3ixup_loss_with_draws, mix, soft_nce, LossTerm, MixupDraws,
};
use m3ixup_agents::{EncoderConfig, JointKind, M3ixupEncoder, M3ixupLossConfig, ModalityTensor, MultimodalInput};
use serde::Deserialize;

use crate::common::*;

#[derive(Deserialize)]
struct Reference {
    encoder: EncoderDims,
    modalities: Vec<ModalityFx>,
    weights: Weights,
    draws: Draws,
    cases: Vec<Case>,
    mix_view: MixView,
}

#[derive(Deserialize)]
struct EncoderDims {
    mlp_hidden: Vec<usize>,
    feature_dim: usize,
    head_hidden: usize,
    latent_dim: usize,
}

#[derive(Deserialize)]
struct ModalityFx {
    name: String,
    dim: usize,
    x: Vec<Vec<f32>>,
}

/// `y = x W + b`, `W` as `[in][out]` (burn's row layout).
#[derive(Deserialize)]
struct LinearFx {
    weight: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

#[derive(Deserialize)]
struct ProcessorFx {
    trunk: Vec<LinearFx>,
    proj: LinearFx,
}

#[derive(Deserialize)]
struct Weights {
    unimodal: Vec<ProcessorFx>,
    joint_trunks: Vec<Vec<LinearFx>>,
    joint_proj: LinearFx,
    head_hidden: LinearFx,
    head_out: LinearFx,
}

#[derive(Deserialize)]
struct Draws {
    lambda: f32,
    perm: Vec<usize>,
    adapt_weights: Vec<f32>,
    bridge_lambda: f32,
    explore_lambda: f32,
    explore_perm: Vec<usize>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    config: M3ixupLossConfig,
    gmc: f64,
    input: f64,
    manifold: f64,
    adapt: f64,
    explore: f64,
    total: f64,
    adapt_inner: Vec<[f64; 2]>,
    explore_inner: Vec<[f64; 2]>,
}

#[derive(Deserialize)]
struct MixView {
    z_joint: Vec<Vec<f32>>,
    a: Vec<Vec<f32>>,
    loss: f64,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/m3ixup_reference.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn matrix<B: Backend>(rows: &[Vec<f32>]) -> Tensor<B, 2> {
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), &Default::default())
}

/// Replaces a layer's parameters, after checking that the numpy layer has the real one's shape.
fn load_linear(layer: &mut Linear<Ad>, fx: &LinearFx, what: &str) {
    let shape = [fx.weight.len(), fx.weight[0].len()];
    assert_eq!(layer.weight.val().dims(), shape, "{what}: weight shape");
    layer.weight = Param::from_tensor(matrix(&fx.weight));
    let bias = Tensor::from_data(TensorData::new(fx.bias.clone(), [fx.bias.len()]), &Default::default());
    layer.bias = Some(Param::from_tensor(bias));
}

fn load_trunk(trunk: &mut Trunk<Ad>, fx: &[LinearFx], what: &str) {
    let Trunk::Mlp(mlp) = trunk else { panic!("{what}: a vector modality gets an MLP trunk") };
    assert_eq!(mlp.layers.len(), fx.len(), "{what}: trunk depth");
    for (i, (layer, fx)) in mlp.layers.iter_mut().zip(fx).enumerate() {
        load_linear(layer, fx, &format!("{what} layer {i}"));
    }
}

/// The encoder of the fixture's space, built from its config (GMC's separate joint trunks), with
/// every parameter replaced by the fixture's; and the fixture's batch.
fn encoder_and_batch(fx: &Reference) -> (M3ixupEncoder<Ad>, MultimodalInput<Ad>) {
    let space = ObsSpace::new(
        fx.modalities.iter().map(|m| (m.name.clone(), ModalitySpec::uniform(&[m.dim], DType::F32, -1.0, 1.0))),
    )
    .unwrap();
    let config = EncoderConfig {
        joint: JointKind::Separate,
        mlp_hidden: fx.encoder.mlp_hidden.clone(),
        feature_dim: fx.encoder.feature_dim,
        head_hidden: fx.encoder.head_hidden,
        latent_dim: fx.encoder.latent_dim,
        ..EncoderConfig::default()
    };
    let mut enc = encoder::<Ad>(&space, &config, 61);
    let names: Vec<&str> = fx.modalities.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(enc.modality_names(), names.as_slice(), "the fixture lists the modalities in space order");
    let w = &fx.weights;
    let mut loaded = 0;
    let mut count = |l: &LinearFx| loaded += l.weight.len() * l.weight[0].len() + l.bias.len();
    for (u, (p, pf)) in enc.unimodal.iter_mut().zip(&w.unimodal).enumerate() {
        load_trunk(&mut p.trunk, &pf.trunk, &format!("f_{u} trunk"));
        load_linear(&mut p.proj, &pf.proj, &format!("f_{u} projection"));
        pf.trunk.iter().chain([&pf.proj]).for_each(&mut count);
    }
    assert_eq!(enc.joint.trunks.len(), w.joint_trunks.len());
    for (u, (t, tf)) in enc.joint.trunks.iter_mut().zip(&w.joint_trunks).enumerate() {
        load_trunk(t, tf, &format!("f_M trunk {u}"));
        tf.iter().for_each(&mut count);
    }
    load_linear(&mut enc.joint.proj, &w.joint_proj, "f_M projection");
    load_linear(&mut enc.head.hidden, &w.head_hidden, "g hidden");
    load_linear(&mut enc.head.out, &w.head_out, "g out");
    [&w.joint_proj, &w.head_hidden, &w.head_out].into_iter().for_each(&mut count);
    assert_eq!(enc.num_params(), loaded, "every parameter comes from the fixture");
    let batch = MultimodalInput::new(fx.modalities.iter().map(|m| ModalityTensor::Vector(matrix(&m.x))).collect());
    (enc, batch)
}

fn assert_close(name: &str, got: f32, want: f64) {
    let tol = 1e-5 * want.abs().max(1.0);
    assert!((got as f64 - want).abs() <= tol, "{name}: {got} vs numpy {want} (tolerance {tol:e})");
}

#[test]
fn every_m3ixup_term_matches_the_numpy_reference() {
    let fx = reference();
    let (enc, batch) = encoder_and_batch(&fx);
    let d = &fx.draws;
    // The loss reads pi and pi' themselves; their seeds only label a sampled draw.
    let draws = MixupDraws {
        lambda: d.lambda,
        perm_seed: 0,
        perm: d.perm.clone(),
        adapt_weights: d.adapt_weights.clone(),
        bridge_lambda: d.bridge_lambda,
        explore_lambda: d.explore_lambda,
        explore_perm_seed: 0,
        explore_perm: d.explore_perm.clone(),
    };
    for p in [&d.perm, &d.explore_perm] {
        assert!(p.iter().enumerate().any(|(k, &j)| j == k), "{p:?} has a fixed point");
    }
    assert_ne!(d.perm, inverse_permutation(&d.perm), "pi is not its own inverse");
    assert_eq!(fx.cases.len(), 4, "step and bridge, each with both exploring starts");
    for case in &fx.cases {
        case.config.validate().unwrap();
        // One graph at a time: no backward on the outer loss, and it is dropped before the next.
        let (_, report) = m3ixup_loss_with_draws(&enc, &batch, &case.config, draws.clone());
        let name = &case.name;
        for (term, want) in [
            (LossTerm::Gmc, case.gmc),
            (LossTerm::Input, case.input),
            (LossTerm::Manifold, case.manifold),
            (LossTerm::Adapt, case.adapt),
            (LossTerm::Explore, case.explore),
        ] {
            assert_close(&format!("{name}: {term}"), report.term(term).unwrap(), want);
        }
        assert_close(&format!("{name}: total"), report.total, case.total);
        for (which, got, want) in [
            ("adapting", &report.adapt_inner, &case.adapt_inner),
            ("exploring", &report.explore_inner, &case.explore_inner),
        ] {
            assert_eq!(got.len(), want.len(), "{name}: {which} inner problems");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_close(&format!("{name}: {which} inner {i} before"), g.before, w[0]);
                assert_close(&format!("{name}: {which} inner {i} after"), g.after, w[1]);
            }
        }
    }
}

#[test]
fn soft_nce_of_a_view_made_by_mix_matches_numpy_with_its_own_mix() {
    // SoftNCE's targets (row k: 1 - lambda on B + pi^-1(k)) must follow mix's convention
    // (mix_k = lambda a_k + (1 - lambda) a_pi(k)); the numpy side mixes with its own mix.
    let fx = reference();
    let (lambda, perm) = (fx.draws.lambda, &fx.draws.perm);
    let z_m = matrix::<Inner>(&fx.mix_view.z_joint);
    let a = matrix::<Inner>(&fx.mix_view.a);
    let tau = M3ixupLossConfig::default().tau as f32;
    let got = scalar(soft_nce(z_m.clone(), mix(a.clone(), a.clone(), lambda, perm), lambda, perm, tau));
    assert_close("SoftNCE of mix(a, a, lambda, pi)", got, fx.mix_view.loss);
    // The fixture tells the conventions apart: targets built from pi^-1 miss it.
    let inv = inverse_permutation(perm);
    let swapped = scalar(soft_nce(z_m, mix(a.clone(), a, lambda, perm), lambda, &inv, tau));
    assert!((swapped as f64 - fx.mix_view.loss).abs() > 1e-2, "pi^-1's targets give {swapped} too");
}
