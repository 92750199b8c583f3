//! The GMC loss, SoftNCE and the M3ixup terms.

use burn::prelude::*;
use m3ixup_agents::envs::{DType, ModalitySpec, ObsSpace};
use m3ixup_agents::representation::losses::{
    gmc_infonce, info_nce, inner_step, input_mixup_loss, input_mixup_loss_from_first_layers, m3ixup_loss,
    m3ixup_loss_with_draws, mix, permutation_from_seed, soft_nce, AdaptMode, Anchor, ExploreStart, LossTerm,
    M3ixupLossConfig, MixupDraws, StepDirection, MIN_TAU,
};
use m3ixup_agents::{EncoderConfig, JointKind, PixelTrunk};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;

use crate::common::*;

#[derive(Deserialize)]
struct Fixture {
    tau: f32,
    z_joint: Vec<Vec<f32>>,
    z_uni: Vec<Vec<Vec<f32>>>,
    gmc_loss: f64,
    gmc_loss_first: f64,
    soft_nce: SoftFixture,
}

#[derive(Deserialize)]
struct SoftFixture {
    lambda: f32,
    perm: Vec<usize>,
    loss: f64,
}

fn matrix<B: Backend>(rows: &[Vec<f32>]) -> Tensor<B, 2> {
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), &Default::default())
}

fn random_unit_rows<B: Backend>(b: usize, d: usize, seed: u64) -> Tensor<B, 2> {
    seeded::<B, _>(seed, |device| {
        m3ixup_agents::representation::encoder::l2_normalize(Tensor::random(
            [b, d],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            device,
        ))
    })
}

#[test]
fn gmc_loss_matches_the_numpy_fixture() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gmc_reference.toml")).unwrap();
    let fx: Fixture = toml::from_str(&text).unwrap();
    let z_m = matrix::<Inner>(&fx.z_joint);
    let z_u: Vec<_> = fx.z_uni.iter().map(|z| matrix::<Inner>(z)).collect();
    let got = scalar(gmc_infonce(z_m.clone(), &z_u, fx.tau)) as f64;
    assert!((got - fx.gmc_loss).abs() < 1e-5, "GMC loss {got} vs numpy {}", fx.gmc_loss);
    let got = scalar(info_nce(z_m.clone(), z_u[0].clone(), fx.tau)) as f64;
    assert!((got - fx.gmc_loss_first).abs() < 1e-5, "one modality {got} vs numpy {}", fx.gmc_loss_first);
    let s = &fx.soft_nce;
    let got = scalar(soft_nce(z_m, z_u[0].clone(), s.lambda, &s.perm, fx.tau)) as f64;
    assert!((got - s.loss).abs() < 1e-5, "SoftNCE {got} vs numpy {}", s.loss);
}

#[test]
fn the_contrastive_terms_stay_finite_at_the_smallest_temperature() {
    // The worst case for the shifted exponentials: row 0 of S at -1/tau everywhere but on the
    // diagonal (z_M's other rows and every row of the view antipodal to z_M's row 0), so each
    // of its terms is exp(-2 / tau) = exp(-80) at tau = MIN_TAU.
    let (b, d) = (6, 4);
    let mut joint = vec![vec![0.0f32; d]; b];
    for (k, row) in joint.iter_mut().enumerate() {
        row[0] = if k == 0 { 1.0 } else { -1.0 };
    }
    let view = vec![joint[1].clone(); b];
    let z_m = matrix::<Ad>(&joint).require_grad();
    let z_t = matrix::<Ad>(&view).require_grad();
    let perm = permutation_from_seed(5, b);
    let loss = Anchor::new(z_m.clone(), MIN_TAU as f32).soft_nce(z_t.clone(), 0.4, &perm);
    assert!(scalar(loss.clone()).is_finite(), "loss {}", scalar(loss));
    let grads = loss.backward();
    for (name, g) in [("z_M", z_m.grad(&grads)), ("z~", z_t.grad(&grads))] {
        assert!(values(g.expect("a gradient")).iter().all(|v| v.is_finite()), "{name}: gradient not finite");
    }
}

#[test]
fn soft_nce_with_lambda_one_or_the_identity_equals_the_gmc_term() {
    let (b, d, tau) = (8, 10, 0.3);
    let z_m = random_unit_rows::<Inner>(b, d, 1);
    let z_t = random_unit_rows::<Inner>(b, d, 2);
    let gmc = scalar(gmc_infonce(z_m.clone(), std::slice::from_ref(&z_t), tau));
    let perm = permutation_from_seed(3, b);
    assert_ne!(perm, (0..b).collect::<Vec<_>>());
    let with_lambda_one = scalar(soft_nce(z_m.clone(), z_t.clone(), 1.0, &perm, tau));
    let identity: Vec<usize> = (0..b).collect();
    let with_identity = scalar(soft_nce(z_m.clone(), z_t.clone(), 0.3, &identity, tau));
    assert!((with_lambda_one - gmc).abs() < 1e-5, "{with_lambda_one} vs {gmc}");
    assert!((with_identity - gmc).abs() < 1e-5, "{with_identity} vs {gmc}");
    // And a genuine mix differs.
    let mixed = scalar(soft_nce(z_m, z_t, 0.3, &perm, tau));
    assert!((mixed - gmc).abs() > 1e-3);
}

#[test]
fn mix_follows_its_definition() {
    let a = matrix::<Inner>(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
    let b = matrix::<Inner>(&[vec![10.0, 20.0], vec![30.0, 40.0], vec![50.0, 60.0]]);
    let got = values(mix(a, b, 0.25, &[2, 0, 1]));
    // k = 0: 0.25 * a_0 + 0.75 * b_2
    let want = [0.25 + 37.5, 0.5 + 45.0, 0.75 + 7.5, 1.0 + 15.0, 1.25 + 22.5, 1.5 + 30.0];
    assert!(max_abs_diff(&got, &want) < 1e-5, "{got:?}");
}

fn only(term: LossTerm) -> M3ixupLossConfig {
    let mut c = M3ixupLossConfig::default();
    c.enable_only(&[term.name()]).unwrap();
    c
}

#[test]
fn every_term_sends_gradients_to_the_processors_the_joint_processor_and_the_head() {
    let space = small_space();
    let (x, _) = batch::<Ad>(&space, BATCH, 11);
    let mut cases: Vec<(String, JointKind, M3ixupLossConfig)> = Vec::new();
    for term in LossTerm::ALL {
        cases.push((term.name().into(), JointKind::Separate, only(term)));
    }
    let mut bridge = only(LossTerm::Adapt);
    bridge.adapt.mode = AdaptMode::Bridge;
    cases.push(("adapt bridge".into(), JointKind::Separate, bridge));
    let mut explore_mix = only(LossTerm::Explore);
    explore_mix.explore.start = ExploreStart::Mix;
    cases.push(("explore from a mix".into(), JointKind::Separate, explore_mix));
    cases.push(("all, shared trunk".into(), JointKind::SharedTrunk, M3ixupLossConfig::default()));
    for (name, joint, config) in cases {
        let enc = encoder::<Ad>(&space, &EncoderConfig { joint, ..Default::default() }, 12);
        let (loss, report) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(13));
        assert!(report.total.is_finite() && report.total > 0.0, "{name}: {report:?}");
        let grads = loss.backward();
        for (u, p) in enc.unimodal.iter().enumerate() {
            let (n, missing) = grad_coverage(p, &grads);
            assert!(n > 0 && missing == 0, "{name}: {missing} of {n} parameters of f_{u} get no gradient");
        }
        let (n, missing) = grad_coverage(&enc.joint, &grads);
        assert!(n > 0 && missing == 0, "{name}: {missing} of {n} parameters of f_M get no gradient");
        let (n, missing) = grad_coverage(&enc.head, &grads);
        assert!(n > 0 && missing == 0, "{name}: {missing} of {n} parameters of g get no gradient");
    }
}

#[test]
fn joint_gradient_keeps_every_value_and_scales_only_the_joint_processors_gradient() {
    let space = small_space();
    let (x, _) = batch::<Ad>(&space, BATCH, 14);
    let mut bridge = M3ixupLossConfig::default();
    bridge.adapt.mode = AdaptMode::Bridge;
    let cases = [
        ("all, separate", JointKind::Separate, M3ixupLossConfig::default()),
        ("all, shared trunk", JointKind::SharedTrunk, M3ixupLossConfig::default()),
        ("adapt bridge", JointKind::Separate, bridge),
    ];
    for (name, joint, config) in cases {
        let enc = encoder::<Ad>(&space, &EncoderConfig { joint, ..Default::default() }, 15);
        let run = |share: f64| {
            let config = M3ixupLossConfig { joint_gradient: share, ..config.clone() };
            let (loss, report) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(16));
            let grads = loss.backward();
            (report.total, grad_values(&enc.joint, &grads), grads)
        };
        let (total, joint_full, _) = run(1.0);
        let (half_total, joint_half, _) = run(0.5);
        let (detached_total, _, grads) = run(0.0);
        for t in [half_total, detached_total] {
            assert!((t - total).abs() < 1e-5, "{name}: the value moved, {t} vs {total}");
        }
        // f_M reaches the loss only through z_M (and h_M): half the share, half its gradient.
        let halved: Vec<f32> = joint_full.iter().map(|g| g * 0.5).collect();
        let scale = joint_full.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "{name}: f_M gets no gradient at share 1");
        assert!(max_abs_diff(&joint_half, &halved) < 1e-4 * scale, "{name}: share 0.5 does not halve f_M's gradient");
        // At 0, f_M gets none, and everything else still learns.
        let (n, missing) = grad_coverage(&enc.joint, &grads);
        assert!(n > 0 && missing == n, "{name}: {} of {n} parameters of f_M get a gradient", n - missing);
        for (u, p) in enc.unimodal.iter().enumerate() {
            let (n, missing) = grad_coverage(p, &grads);
            assert!(n > 0 && missing == 0, "{name}: {missing} of {n} parameters of f_{u} get no gradient");
        }
        let (n, missing) = grad_coverage(&enc.head, &grads);
        assert!(n > 0 && missing == 0, "{name}: {missing} of {n} parameters of g get no gradient");
    }
}

#[test]
fn the_adapting_step_lowers_its_inner_loss_and_the_exploring_step_raises_it() {
    let space = small_space();
    let enc = encoder::<Ad>(&space, &EncoderConfig::default(), 21);
    let (x, _) = batch::<Ad>(&space, BATCH, 22);
    let f = enc.features(&x);
    let z_m = enc.project(f.joint.clone());
    let h_mix = f.unimodal[0].clone().mul_scalar(0.4) + f.unimodal[1].clone().mul_scalar(0.6);
    let id: Vec<usize> = (0..BATCH).collect();
    let perm = permutation_from_seed(23, BATCH);
    let descend =
        inner_step(&enc.head, h_mix.clone(), &Anchor::new(z_m.clone(), 0.3), 1.0, &id, 0.05, 1, StepDirection::Descend);
    let (before, after) = (scalar(descend.loss_before), scalar(descend.loss_after));
    assert!(after < before, "adapting: {before} -> {after}");
    let start = mix(h_mix.clone(), h_mix, 0.7, &perm);
    let ascend = inner_step(&enc.head, start, &Anchor::new(z_m, 0.3), 0.7, &perm, 0.05, 1, StepDirection::Ascend);
    let (before, after) = (scalar(ascend.loss_before), scalar(ascend.loss_after));
    assert!(after > before, "exploring: {before} -> {after}");

    // The same holds inside the full loss, for both exploring starts and several steps.
    for (start, steps) in [(ExploreStart::Adapted, 1), (ExploreStart::Mix, 3)] {
        let mut config = M3ixupLossConfig::default();
        config.explore.start = start;
        config.adapt.steps = steps;
        config.explore.steps = steps;
        let (_, report) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(24));
        assert_eq!(report.adapt_inner.len(), 1);
        assert_eq!(report.explore_inner.len(), 1);
        assert!(report.adapt_inner.iter().all(|r| r.after < r.before), "{start:?}: {:?}", report.adapt_inner);
        assert!(report.explore_inner.iter().all(|r| r.after > r.before), "{start:?}: {:?}", report.explore_inner);
    }
}

#[test]
fn switching_a_term_off_removes_exactly_that_term() {
    let space = small_space();
    let enc = encoder::<Ad>(&space, &EncoderConfig::default(), 31);
    let (x, _) = batch::<Ad>(&space, BATCH, 32);
    let mut full = M3ixupLossConfig::default();
    for (t, w) in LossTerm::ALL.into_iter().zip([1.0, 0.5, 2.0, 0.25, 1.5]) {
        full.set_weight(t, w);
    }
    full.explore.start = ExploreStart::Mix;
    let (_, all) = m3ixup_loss(&enc, &x, &full, &mut StdRng::seed_from_u64(33));
    let weighted: f32 = LossTerm::ALL.iter().map(|&t| all.term(t).unwrap() * full.weight(t) as f32).sum();
    assert!((all.total - weighted).abs() < 1e-4, "total {} vs weighted sum {weighted}", all.total);
    for term in LossTerm::ALL {
        let mut config = full.clone();
        config.set_enabled(term, false);
        let (_, off) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(33));
        assert_eq!(off.term(term), None, "{term} is off");
        assert_eq!(off.draws, all.draws, "{term}: switching a term off changes no draw");
        for other in LossTerm::ALL.into_iter().filter(|&o| o != term) {
            let (a, b) = (all.term(other).unwrap(), off.term(other).unwrap());
            assert!((a - b).abs() < 1e-5, "switching {term} off changed {other}: {a} -> {b}");
        }
        let removed = all.total - off.total;
        let want = full.weight(term) as f32 * all.term(term).unwrap();
        assert!((removed - want).abs() < 1e-4, "switching {term} off removed {removed}, its weighted value is {want}");
    }
    // Everything off: a zero total and an empty report.
    let mut none = full.clone();
    none.enable_only::<&str>(&[]).unwrap();
    let (total, report) = m3ixup_loss(&enc, &x, &none, &mut StdRng::seed_from_u64(33));
    assert_eq!(scalar(total), 0.0);
    assert!(LossTerm::ALL.iter().all(|&t| report.term(t).is_none()));
}

#[test]
fn draws_come_from_the_seeded_rng_and_are_reported() {
    let space = small_space();
    let enc = encoder::<Ad>(&space, &EncoderConfig::default(), 41);
    let (x, _) = batch::<Ad>(&space, BATCH, 42);
    let config = M3ixupLossConfig::default();
    let (_, a) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(43));
    let (_, b) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(43));
    let (_, c) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(44));
    assert_eq!(a, b, "same seed, same report");
    assert_ne!(a.draws, c.draws);
    let d = &a.draws;
    assert!(d.lambda > 0.0 && d.lambda < 1.0);
    assert_eq!(d.perm, permutation_from_seed(d.perm_seed, BATCH));
    assert_eq!(d.explore_perm, permutation_from_seed(d.explore_perm_seed, BATCH));
    assert!((d.adapt_weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(MixupDraws::sample(&mut StdRng::seed_from_u64(43), BATCH, 2, &config), a.draws);
    // Replaying the reported draws gives the same values.
    let (_, replay) = m3ixup_loss_with_draws(&enc, &x, &config, a.draws.clone());
    assert_eq!(replay, a);
    let keys: Vec<String> = a.metrics().into_iter().map(|(k, _)| k).collect();
    for k in
        ["losses/m3ixup", "losses/m3ixup_gmc", "losses/m3ixup_explore", "m3ixup/lambda", "m3ixup/adapt_inner_before"]
    {
        assert!(keys.iter().any(|x| x == k), "missing metric {k} in {keys:?}");
    }
}

#[test]
fn the_loss_config_rejects_unknown_terms_negative_weights_and_bad_alphas() {
    let parse = |s: &str| toml::from_str::<M3ixupLossConfig>(s);
    let ok =
        parse("tau = 0.2\n[manifold]\nweight = 0.5\n[adapt]\nmode = \"bridge\"\n[explore]\nstart = \"mix\"").unwrap();
    assert_eq!(
        (ok.tau, ok.manifold.weight, ok.adapt.mode, ok.explore.start),
        (0.2, 0.5, AdaptMode::Bridge, ExploreStart::Mix)
    );
    assert!(ok.validate().is_ok() && M3ixupLossConfig::default().validate().is_ok());

    let err = parse("[cutmix]\nweight = 1.0").unwrap_err().to_string();
    assert!(err.contains("cutmix"), "{err}");
    let err = parse("[adapt]\nmode = \"jump\"").unwrap_err().to_string();
    assert!(err.contains("jump"), "{err}");
    let err = parse("[input]\nwieght = 1.0").unwrap_err().to_string();
    assert!(err.contains("wieght"), "{err}");
    let err = M3ixupLossConfig::default().enable_only(&["gmc", "cutmix"]).unwrap_err();
    assert_eq!(err.field, "cutmix");
    assert!(err.to_string().contains("cutmix"));

    let field = |s: &str| parse(s).unwrap().validate().unwrap_err().field;
    assert_eq!(field("[manifold]\nweight = -0.5"), "manifold.weight");
    assert_eq!(field("[explore]\nweight = -1.0"), "explore.weight");
    assert_eq!(field("alpha = 0.0"), "alpha");
    assert_eq!(field("alpha = -1.0"), "alpha");
    assert_eq!(field("[adapt]\nalpha = 0.0"), "adapt.alpha");
    assert_eq!(field("[explore]\nalpha = -2.0"), "explore.alpha");
    assert_eq!(field("tau = 0.0"), "tau");
    let err = parse("tau = 0.01").unwrap().validate().unwrap_err().to_string();
    assert!(err.contains("`tau`") && err.contains("0.025") && err.contains("0.01"), "{err}");
    assert!(parse("tau = 0.025").unwrap().validate().is_ok());
    assert_eq!(field("[adapt]\neta = -0.1"), "adapt.eta");
    assert_eq!(field("[explore]\nsteps = 0"), "explore.steps");
    let err = parse("alpha = 0.0").unwrap().validate().unwrap_err().to_string();
    assert!(err.contains("`alpha`"), "{err}");
}

#[test]
fn a_few_adam_steps_lower_the_total() {
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    let space = small_space();
    let mut enc = encoder::<Ad>(&space, &EncoderConfig::default(), 51);
    let (x, _) = batch::<Ad>(&space, BATCH, 52);
    let config = M3ixupLossConfig::default();
    let mut optim = AdamConfig::new().init();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..15 {
        let (loss, report) = m3ixup_loss(&enc, &x, &config, &mut StdRng::seed_from_u64(53)); // fixed draws
        first.get_or_insert(report.total);
        last = report.total;
        let grads = GradientsParams::from_grads(loss.backward(), &enc);
        enc = optim.step(1e-3, enc, grads);
        assert!(report.total.is_finite(), "step {step}");
    }
    assert!(last < first.unwrap() - 0.1, "{:?} -> {last}", first);
}

#[test]
fn input_mixup_from_first_layers_equals_mixing_the_raw_inputs() {
    // L_in's shortcut: the first trunk layer is affine, so mixing its outputs is mixing the
    // inputs. Same value and same gradient on every encoder parameter, for every trunk kind.
    for (trunk, joint, size) in [
        (PixelTrunk::Gmc, JointKind::Separate, 16),
        (PixelTrunk::Small, JointKind::SharedTrunk, 24),
        (PixelTrunk::Nature, JointKind::SharedTrunk, 36),
    ] {
        let space = ObsSpace::new([
            ("sound", ModalitySpec::uniform(&[4], DType::F32, -1.0, 1.0)),
            ("pixels", ModalitySpec::uniform(&[2, size, size], DType::U8, 0.0, 1.0)),
        ])
        .unwrap();
        let config = EncoderConfig { pixel_trunk: trunk, joint, ..EncoderConfig::default() };
        let enc = encoder::<Ad>(&space, &config, 41);
        let (x, _) = batch::<Ad>(&space, BATCH, 42);
        let perm = permutation_from_seed(43, BATCH);
        // One graph at a time: each loss is built and differentiated before the next forward
        // pass. (Two live graphs over the same parameters, differentiated one after the other,
        // lost the second root's step now and then in burn-autodiff 0.21 while other tests'
        // backward passes ran on parallel threads: 3 failures in 200 runs of this binary.)
        let direct = input_mixup_loss(&enc, &x, &Anchor::new(enc.project(enc.features(&x).joint), 0.2), 0.3, &perm);
        let a = scalar(direct.clone());
        let g_direct = direct.backward();
        let direct_grads: Vec<_> = enc.unimodal.iter().map(|p| param_grads(p, &g_direct)).collect();
        let feats = enc.features(&x);
        let z_m = enc.project(feats.joint.clone());
        let shortcut =
            input_mixup_loss_from_first_layers(&enc, &feats.first_layers, &Anchor::new(z_m, 0.2), 0.3, &perm);
        let b = scalar(shortcut.clone());
        assert!((a - b).abs() < 1e-5 * a.abs().max(1.0), "{trunk:?}: {a} vs {b}");
        let g_shortcut = shortcut.backward();
        let mut compared = 0;
        for (u, (p, da)) in enc.unimodal.iter().zip(&direct_grads).enumerate() {
            let db = param_grads(p, &g_shortcut);
            assert_eq!(da.len(), db.len());
            for (ga, gb) in da.iter().zip(&db) {
                let scale = ga.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                assert!(max_abs_diff(ga, gb) < 1e-4 * scale, "{trunk:?}: modality {u}: gradients differ");
                compared += 1;
            }
        }
        assert!(compared >= 6, "{trunk:?}: {compared} gradients compared");
    }
}

/// Every float parameter's gradient in `module` (empty where it has none), in visit order.
fn param_grads<M: burn::module::Module<Ad>>(
    module: &M,
    grads: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<Vec<f32>> {
    struct Collect<'a> {
        grads: &'a <Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl burn::module::ModuleVisitor<Ad> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Ad, D>>) {
            self.out.push(param.val().grad(self.grads).map(values).unwrap_or_default());
        }
    }
    let mut c = Collect { grads, out: Vec::new() };
    module.visit(&mut c);
    c.out
}
