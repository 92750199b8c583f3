//! Convolutions as one gather and one matrix product (im2col written in burn tensor ops), for
//! burn's CPU backend, flex (the conv trunks use this there: `encoder::uses_pixel_rows`; other
//! backends keep their native convolution kernels).
//!
//! Why not `Conv2d::forward` on flex: a convolution's weight gradient goes through burn's
//! generic `conv2d_weight_backward`, which reshapes a non-contiguous tensor that flex copies
//! element by element, then runs a direct convolution; at this project's sizes that backward was
//! 30% of a PPO run (README, "CPU learner speed"). Written as `select` then `matmul`, autodiff
//! differentiates a gather (its gradient a row-wise scatter-add) and a gemm (two gemms), and the
//! pixels' gather needs no gradient at all. The parameters stay burn's `Conv2d` modules, so
//! checkpoints are unchanged, and the function is the same one (tests compare with
//! `Conv2d::forward`, values and gradients).
//!
//! Between layers, activations are *pixel rows* `[B * H * W, C]` (NHWC), so a patch is a gather
//! of whole rows of C values. Patch columns are ordered `(ky, kx, c)`, and [`weight_matrix`]
//! arranges a `[out, in, k, k]` kernel the same way. [`ConvMethod`] picks patches or taps per
//! layer, and [`conv_rows_sparse`] skips the all-zero rows of mostly empty images.

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::representation::losses::index_tensor;

/// One square convolution over an `channels x height x width` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl ConvGeometry {
    /// `None` when the padded input is smaller than the kernel.
    pub fn new(channels: usize, height: usize, width: usize, kernel: usize, stride: usize, pad: usize) -> Option<Self> {
        let out = |size: usize| (size + 2 * pad).checked_sub(kernel).map(|d| d / stride + 1);
        Some(Self { channels, height, width, kernel, stride, pad, out_height: out(height)?, out_width: out(width)? })
    }

    /// The geometry of a trunk's `Conv2d` over a `channels x height x width` input. Panics on
    /// what trunks never build (non-square or dilated kernels, groups, asymmetric padding).
    pub fn of<B: Backend>(conv: &Conv2d<B>, channels: usize, height: usize, width: usize) -> Self {
        let [_, cin, kh, kw] = conv.weight.dims();
        assert!(
            cin == channels && kh == kw && conv.groups == 1 && conv.dilation == [1, 1],
            "a plain square convolution"
        );
        assert_eq!(conv.stride[0], conv.stride[1], "equal strides");
        let pad = match conv.padding {
            PaddingConfig2d::Valid => 0,
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            ref other => panic!("unsupported padding {other:?}"),
        };
        Self::new(channels, height, width, kh, conv.stride[0], pad).expect("the trunk checked the image size")
    }

    /// Output positions per sample.
    pub fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Values in one patch: `kernel * kernel * channels`.
    pub fn patch_width(&self) -> usize {
        self.kernel * self.kernel * self.channels
    }

    /// The output position (`oy * out_width + ox`) that input position `pos` (`y * width + x`)
    /// reaches through tap `tap` (`ky * kernel + kx`), if any.
    pub fn tap_target(&self, pos: usize, tap: usize) -> Option<usize> {
        let (y, x, ky, kx) = (pos / self.width, pos % self.width, tap / self.kernel, tap % self.kernel);
        let (dy, dx) = ((y + self.pad).checked_sub(ky)?, (x + self.pad).checked_sub(kx)?);
        let (oy, ox) = (dy / self.stride, dx / self.stride);
        (dy % self.stride == 0 && dx % self.stride == 0 && oy < self.out_height && ox < self.out_width)
            .then_some(oy * self.out_width + ox)
    }

    /// The input pixel `(y, x)` under each kernel tap, output positions row-major and taps
    /// `(ky, kx)` row-major within each; `None` for a tap in the zero padding.
    fn taps(&self) -> impl Iterator<Item = Option<(usize, usize)>> + '_ {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        (0..self.out_height).flat_map(move |oy| {
            (0..self.out_width).flat_map(move |ox| {
                (0..k).flat_map(move |ky| {
                    (0..k).map(move |kx| {
                        let (y, x) = ((oy * s + ky).checked_sub(p)?, (ox * s + kx).checked_sub(p)?);
                        (y < self.height && x < self.width).then_some((y, x))
                    })
                })
            })
        })
    }
}

/// An image batch `[N, C, H, W]` as pixel rows after a `block x block` space-to-depth (each block
/// of a channel becomes `block^2` channels, row-major within the block; rows and columns beyond a
/// multiple of `block` are dropped): `[N * (H / block) * (W / block), C * block^2]`, one gather.
pub fn image_rows<B: Backend>(x: Tensor<B, 4>, block: usize) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    let (h2, w2) = (h / block, w / block);
    let mut index = Vec::with_capacity(h2 * w2 * c * block * block);
    for y in 0..h2 {
        for xx in 0..w2 {
            for ch in 0..c {
                for dy in 0..block {
                    for dx in 0..block {
                        index.push((ch * h + y * block + dy) * w + xx * block + dx);
                    }
                }
            }
        }
    }
    let index = index_tensor(&index, &x.device());
    x.reshape([n, c * h * w]).select(1, index).reshape([n * h2 * w2, c * block * block])
}

/// The two ways [`conv_rows_with`] computes a convolution (the same function).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMethod {
    /// Each output's patch `[N * OH * OW, k * k * C]` (im2col), times the kernel: one gemm.
    Patches,
    /// Each input pixel times every tap's kernel, `[N * H * W, k * k * out]` (one gemm), then
    /// each output sums the taps that reach it (a scatter-add).
    Taps,
}

impl ConvMethod {
    /// The one with the smaller intermediate matrix: taps for a stride-1 layer whose patches
    /// overlap (the small trunk's k2 s1 layer reads each pixel 4 times), patches otherwise.
    pub fn cheaper(geom: &ConvGeometry, out_channels: usize) -> Self {
        if geom.height * geom.width * out_channels < geom.positions() * geom.channels {
            ConvMethod::Taps
        } else {
            ConvMethod::Patches
        }
    }
}

/// `conv` over pixel rows `[N * H * W, C]` of geometry `geom`: pixel rows `[N * OH * OW, out]`,
/// by the cheaper [`ConvMethod`]. `scale` multiplies the input (a trunk's input scale), folded
/// into the small kernel.
pub fn conv_rows<B: Backend>(
    conv: &Conv2d<B>,
    rows: Tensor<B, 2>,
    batch: usize,
    geom: &ConvGeometry,
    scale: f32,
) -> Tensor<B, 2> {
    let method = ConvMethod::cheaper(geom, conv.weight.dims()[0]);
    conv_rows_with(conv, rows, batch, geom, scale, method, None)
}

/// [`conv_rows`] of an input with many all-zero pixel rows (binary images: a frame of the
/// pendulum lights 3% of its pixels, and 7% of its 4 x 4 blocks): only the occupied rows are
/// multiplied, which is exact because a zero row contributes nothing before the bias. One
/// read-back of the rows' occupancy; dense inputs (more than half occupied) and inputs that need
/// a gradient (a zero row's gradient is not zero) take [`conv_rows`].
pub fn conv_rows_sparse<B: Backend>(
    conv: &Conv2d<B>,
    rows: Tensor<B, 2>,
    batch: usize,
    geom: &ConvGeometry,
    scale: f32,
) -> Tensor<B, 2> {
    let method = ConvMethod::cheaper(geom, conv.weight.dims()[0]);
    let occupied = if rows.is_require_grad() { None } else { occupied_rows(&rows) };
    conv_rows_with(conv, rows, batch, geom, scale, method, occupied.as_deref())
}

/// The indices of the rows with a non-zero value, or `None` when more than half of them have one.
pub fn occupied_rows<B: Backend>(rows: &Tensor<B, 2>) -> Option<Vec<usize>> {
    let norms = rows.clone().detach().abs().sum_dim(1).into_data().convert::<f32>();
    let norms = norms.as_slice::<f32>().expect("f32 after convert");
    let occupied: Vec<usize> = norms.iter().enumerate().filter(|(_, &v)| v != 0.0).map(|(i, _)| i).collect();
    (occupied.len() * 2 <= norms.len()).then_some(occupied)
}

/// [`conv_rows`] by a given method. `occupied`, when given, lists (ascending) the only input rows
/// that may be non-zero; the others are taken as zero and skipped.
pub fn conv_rows_with<B: Backend>(
    conv: &Conv2d<B>,
    rows: Tensor<B, 2>,
    batch: usize,
    geom: &ConvGeometry,
    scale: f32,
    method: ConvMethod,
    occupied: Option<&[usize]>,
) -> Tensor<B, 2> {
    let [count, c] = rows.dims();
    assert_eq!((count, c), (batch * geom.height * geom.width, geom.channels), "pixel rows match the geometry");
    let out = conv.weight.dims()[0];
    let outputs = batch * geom.positions();
    let device = rows.device();
    let all: Vec<usize>;
    let inputs = match occupied {
        Some(rows) => rows,
        None => {
            all = (0..count).collect();
            &all
        }
    };
    let mut y = match method {
        ConvMethod::Taps => {
            let rows = if occupied.is_some() { rows.select(0, index_tensor(inputs, &device)) } else { rows };
            // Each product row goes to the output its tap reaches, or to a spare row cut off after.
            let targets: Vec<usize> = tap_targets(geom, inputs).map(|t| t.unwrap_or(outputs)).collect();
            Tensor::zeros([outputs + 1, out], &device)
                .select_assign(
                    0,
                    index_tensor(&targets, &device),
                    tap_products(conv, rows, scale),
                    IndexingUpdateOp::Add,
                )
                .narrow(0, 0, outputs)
        }
        ConvMethod::Patches => {
            let w = weight_matrix(conv.weight.val());
            let w = if scale != 1.0 { w.mul_scalar(scale) } else { w };
            match occupied {
                None => row_patches(rows, batch, geom, None).matmul(w),
                Some(_) => {
                    // The outputs some occupied pixel reaches; the others see zeros only.
                    let mut live: Vec<usize> = tap_targets(geom, inputs).flatten().collect();
                    live.sort_unstable();
                    live.dedup();
                    let y_live = row_patches(rows, batch, geom, Some(&live)).matmul(w);
                    Tensor::zeros([outputs, out], &device).select_assign(
                        0,
                        index_tensor(&live, &device),
                        y_live,
                        IndexingUpdateOp::Add,
                    )
                }
            }
        }
    };
    if let Some(bias) = &conv.bias {
        y = y + bias.val().unsqueeze_dim(0);
    }
    y
}

/// The output row (`sample * positions + position`) that each input pixel row of `inputs`
/// reaches through each tap, in (input, tap) order; `None` where the stride skips it.
fn tap_targets<'a>(geom: &'a ConvGeometry, inputs: &'a [usize]) -> impl Iterator<Item = Option<usize>> + 'a {
    let per_pixel = geom.height * geom.width;
    inputs.iter().flat_map(move |&r| {
        let (b, pos) = (r / per_pixel, r % per_pixel);
        (0..geom.kernel * geom.kernel).map(move |tap| geom.tap_target(pos, tap).map(|o| b * geom.positions() + o))
    })
}

/// The patches of pixel rows `[N * H * W, C]`, one row gather: `[N * positions, patch_width]`,
/// or only the listed output rows' (`sample * positions + position`). Taps in the zero padding
/// read a zero row appended for them.
fn row_patches<B: Backend>(
    rows: Tensor<B, 2>,
    batch: usize,
    geom: &ConvGeometry,
    outputs: Option<&[usize]>,
) -> Tensor<B, 2> {
    let [count, c] = rows.dims();
    let per_sample = geom.height * geom.width;
    let taps: Vec<Option<usize>> = geom.taps().map(|t| t.map(|(y, x)| y * geom.width + x)).collect();
    let per_output = geom.kernel * geom.kernel;
    let patch = |o: usize| {
        let (b, position) = (o / geom.positions(), o % geom.positions());
        taps[position * per_output..(position + 1) * per_output]
            .iter()
            .map(move |t| t.map_or(count, |p| b * per_sample + p))
    };
    let (index, n): (Vec<usize>, usize) = match outputs {
        Some(list) => (list.iter().flat_map(|&o| patch(o)).collect(), list.len()),
        None => ((0..batch * geom.positions()).flat_map(patch).collect(), batch * geom.positions()),
    };
    let rows =
        if geom.pad > 0 { Tensor::cat(vec![rows.clone(), Tensor::zeros([1, c], &rows.device())], 0) } else { rows };
    let index = index_tensor(&index, &rows.device());
    rows.select(0, index).reshape([n, geom.patch_width()])
}

/// Every pixel row times every tap's kernel: `[M, C] -> [M * k * k, out]` (row `m * k * k + t`
/// is pixel m's contribution through tap t = (ky, kx)).
fn tap_products<B: Backend>(conv: &Conv2d<B>, rows: Tensor<B, 2>, scale: f32) -> Tensor<B, 2> {
    let [out, cin, kh, kw] = conv.weight.dims();
    let mut w = conv.weight.val().permute([1, 2, 3, 0]).reshape([cin, kh * kw * out]);
    if scale != 1.0 {
        w = w.mul_scalar(scale);
    }
    let m = rows.dims()[0];
    rows.matmul(w).reshape([m * kh * kw, out])
}

/// A `[out, in, k, k]` kernel as the `[k * k * in, out]` matrix that multiplies patches.
pub fn weight_matrix<B: Backend>(weight: Tensor<B, 4>) -> Tensor<B, 2> {
    let [out, cin, kh, kw] = weight.dims();
    weight.permute([2, 3, 1, 0]).reshape([kh * kw * cin, out])
}

/// Pixel rows `[N * P, C]` flattened per sample in NCHW order (`Conv2d`'s `[N, C, H, W]` then
/// `flatten(1, 3)`): `[N, C * P]`.
///
/// Done as a 2-D transpose (`[N * P, C] -> [C, N * P]`, copied in tiles) and a selection of
/// whole rows of P values in `(n, c)` order: flex copies the direct 3-D permutation
/// (`[N, P, C] -> [N, C, P]`) element by element, forward and backward, which a sampling profile
/// of the main config put at a tenth of a training run.
pub fn rows_to_flat_nchw<B: Backend>(rows: Tensor<B, 2>, batch: usize) -> Tensor<B, 2> {
    let [count, c] = rows.dims();
    let positions = count / batch;
    let device = rows.device();
    let by_channel = rows.transpose().reshape([c * batch, positions]); // row ch * N + n
    let order: Vec<usize> = (0..batch).flat_map(|n| (0..c).map(move |ch| ch * batch + n)).collect();
    by_channel.select(0, index_tensor::<B>(&order, &device)).reshape([batch, c * positions])
}
