//! The convolutions of `m3ixup_agents::representation::conv` against burn's `Conv2d::forward`: values and every
//! gradient, for each formulation and each layer shape the trunks build; and the whole conv
//! trunk against the space-to-depth + `Conv2d` stack it replaces.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::Distribution;
use m3ixup_agents::envs::{DType, ModalitySpec, ObsSpace};
use m3ixup_agents::representation::conv::{
    conv_rows_sparse, conv_rows_with, image_rows, occupied_rows, rows_to_flat_nchw, ConvGeometry, ConvMethod,
};
use m3ixup_agents::representation::encoder::Trunk;
use m3ixup_agents::{EncoderConfig, PixelTrunk};

use crate::common::*;

/// `[N, C, H, W]` -> pixel rows `[N * H * W, C]`, the plain way (a permute).
fn to_rows<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

/// (channels, size, out, kernel, stride, pad, bias): the small trunk's two layers, GMC's two,
/// Nature's first and last, and a padded stride-1 layer.
const LAYERS: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    (32, 7, 16, 2, 1, 0, true),
    (16, 9, 32, 4, 2, 0, true),
    (2, 12, 32, 4, 2, 1, false),
    (32, 6, 64, 4, 2, 1, false),
    (2, 20, 32, 8, 4, 0, true),
    (64, 5, 64, 3, 1, 0, true),
    (3, 6, 5, 3, 1, 1, true),
];

/// A conv layer whose parameters are drawn now: burn draws them lazily, at first use, which
/// would happen outside `seeded`'s lock and race with other tests' seeded draws.
fn layer<B: Backend>(c: usize, out: usize, k: usize, s: usize, p: usize, bias: bool, device: &B::Device) -> Conv2d<B> {
    let conv = Conv2dConfig::new([c, out], [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .init(device);
    let _ = conv.weight.val();
    if let Some(b) = &conv.bias {
        let _ = b.val();
    }
    conv
}

#[test]
fn both_formulations_match_conv2d_in_value_and_every_gradient() {
    for &(c, size, out, k, s, p, bias) in LAYERS {
        for method in [ConvMethod::Patches, ConvMethod::Taps] {
            let (conv, x) = seeded::<Ad, _>(7, |device| {
                (
                    layer::<Ad>(c, out, k, s, p, bias, device),
                    Tensor::<Ad, 4>::random([3, c, size, size], Distribution::Normal(0.0, 1.0), device),
                )
            });
            let x = x.require_grad();
            let scale = 0.5;
            let case = format!("{method:?} c{c} {size}x{size} -> {out} k{k} s{s} p{p}");
            // The same upstream gradient through both: values and the gradients of x, W and b
            // must agree. One autodiff graph at a time (see the input-mixup shortcut test in
            // losses.rs): the reference is differentiated before our forward pass is built.
            let reference = conv.forward(x.clone().mul_scalar(scale));
            let [_, _, oh, ow] = reference.dims();
            let reference = to_rows(reference);
            let expected = values(reference.clone());
            let upstream =
                seeded::<Ad, _>(8, |d| Tensor::<Ad, 2>::random(reference.dims(), Distribution::Normal(0.0, 1.0), d));
            let g_ref = (reference * upstream.clone()).sum().backward();
            let geom = ConvGeometry::of(&conv, c, size, size);
            assert_eq!((geom.out_height, geom.out_width), (oh, ow), "{case}: output size");
            let ours = conv_rows_with(&conv, to_rows(x.clone()), 3, &geom, scale, method, None);
            assert!(max_abs_diff(&values(ours.clone()), &expected) < 1e-4, "{case}: values");
            let g_ours = (ours * upstream).sum().backward();
            let pairs = [
                (x.grad(&g_ours).map(values), x.grad(&g_ref).map(values), "x"),
                (conv.weight.val().grad(&g_ours).map(values), conv.weight.val().grad(&g_ref).map(values), "weight"),
                (
                    conv.bias.as_ref().and_then(|b| b.val().grad(&g_ours)).map(values),
                    conv.bias.as_ref().and_then(|b| b.val().grad(&g_ref)).map(values),
                    "bias",
                ),
            ];
            for (a, b, name) in pairs {
                assert_eq!(a.is_some(), b.is_some(), "{case}: {name} gradient presence");
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(max_abs_diff(&a, &b) < 1e-3, "{case}: {name} gradient differs by {}", max_abs_diff(&a, &b));
                }
            }
        }
    }
}

#[test]
fn image_rows_is_a_space_to_depth_then_nhwc() {
    let x = seeded::<Inner, _>(3, |d| Tensor::<Inner, 4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), d));
    let rows = values(image_rows(x.clone(), 4)); // [2 * 2 * 2, 3 * 16]; row 9 and column 8 dropped
    let v = values(x);
    let at = |n: usize, c: usize, y: usize, xx: usize| v[((n * 3 + c) * 9 + y) * 8 + xx];
    for n in 0..2 {
        for (by, bx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            for c in 0..3 {
                for dy in 0..4 {
                    for dx in 0..4 {
                        let row = (n * 2 + by) * 2 + bx;
                        let col = (c * 4 + dy) * 4 + dx;
                        assert_eq!(rows[row * 48 + col], at(n, c, by * 4 + dy, bx * 4 + dx));
                    }
                }
            }
        }
    }
}

/// The conv trunk as it was written before pixel rows: an explicit space-to-depth, then
/// `Conv2d::forward` and the activation per layer, then `flatten`.
fn reference_trunk<B: Backend>(
    convs: &[Conv2d<B>],
    x: Tensor<B, 4>,
    scale: f32,
    block: usize,
    relu_act: bool,
) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    let rows = image_rows(x.mul_scalar(scale), block); // checked against its definition above
    let mut x = rows.reshape([n, h / block, w / block, c * block * block]).permute([0, 3, 1, 2]);
    for conv in convs {
        let y = conv.forward(x);
        x = if relu_act { relu(y) } else { burn::tensor::activation::silu(y) };
    }
    x.flatten(1, 3)
}

#[test]
fn conv_trunks_compute_the_space_to_depth_conv2d_stack() {
    for (kind, block, relu_act, size) in
        [(PixelTrunk::Small, 4, true, 60), (PixelTrunk::Gmc, 1, false, 12), (PixelTrunk::Nature, 1, true, 40)]
    {
        let space =
            ObsSpace::new([("pixels", ModalitySpec::uniform(&[2, size, size], DType::U8, 0.0, 255.0))]).unwrap();
        let config = EncoderConfig { pixel_trunk: kind, ..EncoderConfig::default() };
        let enc = encoder::<Inner>(&space, &config, 11);
        let (x, _) = batch::<Inner>(&space, 3, 12);
        let Trunk::Conv(trunk) = &enc.unimodal[0].trunk else { panic!("pixels get a conv trunk") };
        let image = match &x.modalities[0] {
            m3ixup_agents::ModalityTensor::Image(t) => t.clone(),
            _ => unreachable!(),
        };
        let ours = values(trunk.forward(image.clone()));
        let expected = values(reference_trunk(&trunk.convs, image, 1.0 / 255.0, block, relu_act));
        assert_eq!(ours.len(), expected.len(), "{kind:?}");
        assert!(max_abs_diff(&ours, &expected) < 1e-4, "{kind:?}: differs by {}", max_abs_diff(&ours, &expected));
    }
}

#[test]
fn rows_flatten_in_conv2d_order() {
    // Two samples of 2 x 3 positions and 2 channels, numbered so the order is visible.
    let rows = Tensor::<Inner, 1, Int>::arange(0..24, &Default::default()).float().reshape([12, 2]);
    let flat = values(rows_to_flat_nchw(rows, 2));
    // Sample 0: channel 0 holds rows 0..6's first values (0, 2, ..., 10), then channel 1.
    assert_eq!(&flat[..12], &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0]);
    assert_eq!(flat[12], 12.0);
}

#[test]
fn mostly_empty_inputs_skip_their_zero_rows_with_the_same_result() {
    // Binary images light few pixels: rows that are all zero are skipped (both methods), and the
    // output and the kernel's gradients are those of the dense convolution.
    for &(c, size, out, k, s, p, bias) in LAYERS {
        let (conv, x) = seeded::<Ad, _>(9, |device| {
            let conv = layer::<Ad>(c, out, k, s, p, bias, device);
            let x = Tensor::<Ad, 4>::random([3, c, size, size], Distribution::Normal(0.0, 1.0), device);
            // Keep about one pixel in eight (whole rows: every channel of a pixel together).
            let keep = Tensor::<Ad, 4>::random([3, 1, size, size], Distribution::Uniform(0.0, 1.0), device)
                .lower_elem(0.125)
                .float();
            (conv, x * keep)
        });
        let geom = ConvGeometry::of(&conv, c, size, size);
        let rows = to_rows(x.clone());
        let occupied = occupied_rows(&rows).expect("most rows are empty");
        assert!(!occupied.is_empty() && occupied.len() * 4 < rows.dims()[0], "{} occupied", occupied.len());
        let reference = to_rows(conv.forward(x.mul_scalar(0.5)));
        let g_ref = (reference.clone() * reference.clone()).sum().backward();
        for method in [ConvMethod::Patches, ConvMethod::Taps] {
            let case = format!("{method:?} c{c} {size}x{size} -> {out} k{k} s{s} p{p}");
            let ours = conv_rows_with(&conv, rows.clone(), 3, &geom, 0.5, method, Some(&occupied));
            assert!(max_abs_diff(&values(ours.clone()), &values(reference.clone())) < 1e-4, "{case}: values");
            let g = (ours.clone() * ours).sum().backward();
            let (a, b) =
                (conv.weight.val().grad(&g).map(values).unwrap(), conv.weight.val().grad(&g_ref).map(values).unwrap());
            assert!(
                max_abs_diff(&a, &b) < 1e-3 * b.iter().fold(1.0f32, |m, v| m.max(v.abs())),
                "{case}: weight gradient"
            );
        }
        let auto = conv_rows_sparse(&conv, rows, 3, &geom, 0.5);
        assert!(max_abs_diff(&values(auto), &values(reference)) < 1e-4, "c{c} k{k}: the automatic choice");
    }
}
