//! Encoders built from the observation space, and the missing-modality fallback.

use burn::prelude::*;
use m3ixup_agents::envs::{DType, ModalitySpec, ObsSpace};
use m3ixup_agents::representation::encoder::{input_scale, ModalityTensor, Trunk};
use m3ixup_agents::{EncoderConfig, EncoderError, JointKind, PixelTrunk, Presence};

use crate::common::*;

fn linear_dims<B: Backend>(l: &burn::nn::Linear<B>) -> [usize; 2] {
    l.weight.dims()
}

#[test]
fn gmc_defaults_build_the_papers_network_from_the_pendulum_space() {
    let space = ObsSpace::new([
        ("pixels", ModalitySpec::uniform(&[2, 60, 60], DType::U8, 0.0, 1.0)),
        ("sound", ModalitySpec::uniform(&[12], DType::F32, -1.0, 1.0)),
    ])
    .unwrap();
    let enc = encoder::<Inner>(&space, &EncoderConfig::default(), 0);
    assert_eq!(enc.modality_names(), ["pixels", "sound"]);
    // f_pixels: Conv(2->32, k4, s2, p1, no bias) -> Conv(32->64, ...) -> Linear(14400 -> 64).
    let Trunk::Conv(conv) = &enc.unimodal[0].trunk else { panic!("pixels need a conv trunk") };
    assert_eq!(conv.convs.len(), 2);
    assert_eq!(conv.convs[0].weight.dims(), [32, 2, 4, 4]);
    assert_eq!(conv.convs[1].weight.dims(), [64, 32, 4, 4]);
    assert!(conv.convs[0].bias.is_none() && conv.convs[1].bias.is_none());
    assert_eq!(linear_dims(&enc.unimodal[0].proj), [14400, 64]);
    // f_sound: 12 -> 50 -> 50 -> 64.
    let Trunk::Mlp(mlp) = &enc.unimodal[1].trunk else { panic!("sound needs an MLP trunk") };
    assert_eq!(mlp.layers.iter().map(linear_dims).collect::<Vec<_>>(), [[12, 50], [50, 50]]);
    assert_eq!(linear_dims(&enc.unimodal[1].proj), [50, 64]);
    // f_M: its own trunks, (14400 + 50) -> 64.
    assert_eq!(enc.joint.trunks.len(), 2);
    assert_eq!(linear_dims(&enc.joint.proj), [14450, 64]);
    // g: 64 -> 128 -> 10.
    assert_eq!(linear_dims(&enc.head.hidden), [64, 128]);
    assert_eq!(linear_dims(&enc.head.out), [128, 10]);
    assert_eq!((enc.feature_dim(), enc.latent_dim()), (64, 10));

    let (x, presence) = batch::<Inner>(&space, 2, 1);
    let z = enc.encode(&x, &presence);
    assert_eq!(z.dims(), [2, 10]);
    let norms = values(z.square().sum_dim(1));
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "latents are unit rows: {norms:?}");
}

#[test]
fn nature_trunk_and_shared_trunk_options_build_from_the_space() {
    let space = ObsSpace::new([
        ("pixels", ModalitySpec::uniform(&[3, 36, 36], DType::U8, 0.0, 255.0)),
        ("sound", ModalitySpec::uniform(&[4], DType::F32, -1.0, 1.0)),
    ])
    .unwrap();
    let config = EncoderConfig { pixel_trunk: PixelTrunk::Nature, joint: JointKind::SharedTrunk, ..Default::default() };
    let enc = encoder::<Inner>(&space, &config, 0);
    // 36 -> 8 -> 3 -> 1: 64 features.
    assert_eq!(enc.unimodal[0].trunk.out_dim(), 64);
    assert_eq!(linear_dims(&enc.unimodal[0].proj), [64, 64]);
    assert!(enc.joint.trunks.is_empty(), "shared-trunk owns no trunk");
    assert_eq!(linear_dims(&enc.joint.proj), [64 + 50, 64]);

    let (x, _) = batch::<Inner>(&space, 3, 2);
    let f = enc.features(&x);
    assert_eq!(max_abs_diff(&values(f.joint), &values(enc.joint_features(&x))), 0.0);
    for (u, h) in f.unimodal.into_iter().enumerate() {
        assert_eq!(h.dims(), [3, 64]);
        assert_eq!(max_abs_diff(&values(h), &values(enc.unimodal_feature(u, x.modalities[u].clone()))), 0.0);
    }

    let err = EncoderConfig { pixel_trunk: PixelTrunk::Nature, ..Default::default() }
        .init::<Inner>(&small_space(), &Default::default())
        .unwrap_err();
    assert!(matches!(&err, EncoderError::UnsupportedModality { modality, .. } if modality == "pixels"), "{err}");
}

#[test]
fn u8_inputs_are_scaled_by_the_specs_high_bound() {
    assert_eq!(input_scale(&ModalitySpec::uniform(&[1, 4, 4], DType::U8, 0.0, 255.0)), 1.0 / 255.0);
    assert_eq!(input_scale(&ModalitySpec::uniform(&[1, 4, 4], DType::U8, 0.0, 1.0)), 1.0);
    assert_eq!(input_scale(&ModalitySpec::uniform(&[4], DType::F32, -8.0, 8.0)), 1.0);

    // Same weights, pixels 0/1 with high 1 versus 0/255 with high 255: identical features.
    let space_1 = small_space();
    let space_255 = space_1.map_specs(|_, s| {
        if s.dtype == DType::U8 {
            ModalitySpec::uniform(&s.shape, DType::U8, 0.0, 255.0)
        } else {
            s.clone()
        }
    });
    let enc_1 = encoder::<Inner>(&space_1, &EncoderConfig::default(), 3);
    let enc_255 = encoder::<Inner>(&space_255, &EncoderConfig::default(), 0);
    let enc_255 = enc_255.load_record(enc_1.clone().into_record());
    let (x, _) = batch::<Inner>(&space_1, 4, 4);
    let ModalityTensor::Image(pix) = x.modalities[0].clone() else { panic!() };
    let x_255 = m3ixup_agents::MultimodalInput::new(vec![
        ModalityTensor::Image(pix.mul_scalar(255.0)),
        x.modalities[1].clone(),
    ]);
    let d = max_abs_diff(&values(enc_1.joint_features(&x)), &values(enc_255.joint_features(&x_255)));
    assert!(d < 1e-5, "scaling differs by {d}");
}

#[test]
fn from_obs_stacks_modalities_and_presence() {
    let space = small_space();
    let mut obs = random_obs(&space, 3, 5);
    obs[1].drop_modality(1);
    let (x, presence) = m3ixup_agents::MultimodalInput::<Inner>::from_obs(&space, &obs, &Default::default()).unwrap();
    assert_eq!(x.batch_size(), 3);
    let ModalityTensor::Image(pix) = &x.modalities[0] else { panic!("pixels first") };
    assert_eq!(pix.dims(), [3, 2, 12, 12]);
    let ModalityTensor::Vector(snd) = &x.modalities[1] else { panic!("sound second") };
    assert_eq!(snd.dims(), [3, 4]);
    let want: Vec<f32> = obs[2].data[1].as_f32().unwrap().to_vec();
    assert_eq!(values(snd.clone().narrow(0, 2, 1)), want);
    assert_eq!(presence, Presence::from_rows(&[vec![true, true], vec![true, false], vec![true, true]]));
}

#[test]
fn encode_with_missing_modalities_is_the_mean_of_the_present_unimodal_latents() {
    let space = three_modality_space();
    for joint in [JointKind::Separate, JointKind::SharedTrunk] {
        let enc = encoder::<Inner>(&space, &EncoderConfig { joint, ..Default::default() }, 6);
        let (x, _) = batch::<Inner>(&space, 5, 7);
        let (t, f) = (true, false);
        let presence =
            Presence::from_rows(&[vec![t, t, t], vec![t, f, f], vec![f, t, t], vec![t, f, t], vec![f, f, f]]);
        let z = values(enc.encode(&x, &presence));
        let z_m = values(enc.project(enc.joint_features(&x)));
        let z_u: Vec<Vec<f32>> =
            (0..3).map(|u| values(enc.project(enc.unimodal_feature(u, x.modalities[u].clone())))).collect();
        let d = enc.latent_dim();
        let row = |v: &[f32], k: usize| v[k * d..(k + 1) * d].to_vec();
        let mean = |k: usize, us: &[usize]| -> Vec<f32> {
            (0..d).map(|i| us.iter().map(|&u| z_u[u][k * d + i]).sum::<f32>() / us.len() as f32).collect()
        };
        assert!(max_abs_diff(&row(&z, 0), &row(&z_m, 0)) < 1e-6, "complete row -> z_M");
        assert!(max_abs_diff(&row(&z, 1), &row(&z_u[0], 1)) < 1e-6, "one modality -> its z_u");
        assert!(max_abs_diff(&row(&z, 2), &mean(2, &[1, 2])) < 1e-6, "mean of the present z_u");
        assert!(max_abs_diff(&row(&z, 3), &mean(3, &[0, 2])) < 1e-6, "mean of the present z_u");
        assert_eq!(row(&z, 4), vec![0.0; d], "nothing present -> zeros");

        // Pre-projection features follow the same rule.
        let h = values(enc.encode_features(&x, &presence));
        let h_1 = values(enc.unimodal_feature(0, x.modalities[0].clone()));
        let w = enc.feature_dim();
        assert!(max_abs_diff(&h[w..2 * w], &h_1[w..2 * w]) < 1e-6);

        // Every row complete: exactly z_M.
        let all = values(enc.encode(&x, &Presence::all(5, 3)));
        assert_eq!(max_abs_diff(&all, &z_m), 0.0);
    }
}

#[test]
fn the_shared_trunk_fallback_trains_the_encoder_as_the_rule_computed_path_by_path() {
    // With shared trunks the fallback runs each trunk once for h_M and every h_u; its gradients
    // must be those of the rule written out with a trunk pass per path.
    let space = three_modality_space();
    let enc = encoder::<Ad>(&space, &EncoderConfig { joint: JointKind::SharedTrunk, ..Default::default() }, 6);
    let (x, _) = batch::<Ad>(&space, 4, 7);
    let (t, f) = (true, false);
    let presence = Presence::from_rows(&[vec![t, t, t], vec![t, f, f], vec![f, t, t], vec![t, t, t]]);
    let device = Default::default();
    // A fixed random readout, so every latent coordinate carries gradient.
    let readout = Tensor::<Ad, 2>::from_data(
        TensorData::new(
            (0..4 * enc.latent_dim()).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect::<Vec<_>>(),
            [4, enc.latent_dim()],
        ),
        &device,
    );
    let fused = (enc.encode(&x, &presence) * readout.clone()).sum();
    let z_m = enc.project(enc.joint_features(&x));
    let z_u: Vec<_> = (0..3).map(|u| enc.project(enc.unimodal_feature(u, x.modalities[u].clone()))).collect();
    let row = |z: &Tensor<Ad, 2>, k: usize| z.clone().narrow(0, k, 1);
    let by_path = Tensor::cat(
        vec![row(&z_m, 0), row(&z_u[0], 1), (row(&z_u[1], 2) + row(&z_u[2], 2)).div_scalar(2.0), row(&z_m, 3)],
        0,
    );
    let by_path = (by_path * readout).sum();
    assert!((scalar(fused.clone()) - scalar(by_path.clone())).abs() < 1e-5);
    let (a, b) = (grad_values(&enc, &fused.backward()), grad_values(&enc, &by_path.backward()));
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    assert!(max_abs_diff(&a, &b) <= 1e-5 * scale, "{} against {scale}", max_abs_diff(&a, &b));
}

#[test]
fn encoder_config_rejects_bad_values_and_unknown_keys() {
    let err = EncoderConfig { latent_dim: 0, ..Default::default() }.validate().unwrap_err();
    assert!(matches!(&err, EncoderError::InvalidConfig { field, .. } if field == "latent_dim"), "{err}");
    let err = toml::from_str::<EncoderConfig>("pixel_trunk = \"nature\"\nlatent_size = 3").unwrap_err();
    assert!(err.to_string().contains("latent_size"), "{err}");
    let err = toml::from_str::<EncoderConfig>("joint = \"fused\"").unwrap_err();
    assert!(err.to_string().contains("fused"), "{err}");
    let c: EncoderConfig = toml::from_str("joint = \"shared-trunk\"\npixel_trunk = \"nature\"").unwrap();
    assert_eq!((c.joint, c.pixel_trunk, c.latent_dim), (JointKind::SharedTrunk, PixelTrunk::Nature, 10));
}

#[test]
fn clones_share_weights_and_the_backend_seed_fixes_them() {
    // burn initialises parameters lazily and a clone of an uninitialised parameter draws its own
    // values; the encoder materialises its parameters at construction, so neither can happen.
    let space = small_space();
    let a = encoder::<Inner>(&space, &EncoderConfig::default(), 61);
    let clone = a.clone();
    let b = encoder::<Inner>(&space, &EncoderConfig::default(), 61);
    let (x, presence) = batch::<Inner>(&space, 3, 62);
    let z = values(a.encode(&x, &presence));
    assert_eq!(values(clone.encode(&x, &presence)), z);
    assert_eq!(values(b.encode(&x, &presence)), z);
    assert_eq!(values(a.head.detached().forward(a.joint_features(&x))), z);
}
