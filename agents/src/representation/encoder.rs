//! Multimodal encoders built from the observation space (docs/M3IXUP.md section 1, GMC's model).
//!
//! ```text
//!   x_u ──f_u──> h_u ──┐                      (one modality-specific processor per modality)
//!                      ├──g──> z = h / ||h||  (one projection head shared by every path)
//!   x   ──f_M──> h_M ──┘                      (one joint processor over all modalities)
//! ```
//!
//! A processor is a *trunk* (conv stack for image modalities, MLP for vector modalities) followed
//! by a linear projection to the common feature width. GMC's joint processor f_M owns a second
//! copy of every trunk, concatenates their outputs and projects them (`joint = "separate"`); the
//! cheaper `joint = "shared-trunk"` reuses the unimodal trunks' outputs instead, so the pixels run
//! through one conv stack per forward pass, and only the joint projection is the joint's own.
//!
//! Inputs hold raw values as `f32` (u8 pixels converted on the learner, not rescaled): each trunk
//! multiplies its input by a scale derived from the modality spec, see [`input_scale`].

use crate::representation::conv::{conv_rows, conv_rows_sparse, image_rows, rows_to_flat_nchw, ConvGeometry};
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, silu};
use m3ixup_envs::{DType, ModalityData, ModalitySpec, Obs, ObsSpace};
use serde::{Deserialize, Serialize};

/// Errors raised while building an encoder or assembling its inputs.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A config value is out of range; `field` names the key.
    #[error("encoder config `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// A modality the chosen architecture cannot process (for example too small an image).
    #[error("modality `{modality}`: {reason}")]
    UnsupportedModality { modality: String, reason: String },
    /// Observations that do not match the space.
    #[error("observation {index}: {reason}")]
    BadObservation { index: usize, reason: String },
}

/// The conv stack used for image modalities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PixelTrunk {
    /// GMC: Conv(C->32, k4, s2, p1, no bias) -> Swish -> Conv(32->64, k4, s2, p1, no bias) ->
    /// Swish -> flatten (64 x H/4 x W/4 = 14400 for 60 x 60).
    #[default]
    Gmc,
    /// Nature-DQN (Mnih et al. 2015): Conv(C->32, k8, s4) -> ReLU -> Conv(32->64, k4, s2) -> ReLU
    /// -> Conv(64->64, k3, s1) -> ReLU -> flatten (64 x 4 x 4 = 1024 for 60 x 60, so the
    /// projection after it is 14 times smaller than GMC's). Needs images of at least 36 x 36.
    Nature,
    /// A compact stack for on-policy training on a CPU: Conv(C->16, k8, s4) -> ReLU ->
    /// Conv(16->32, k4, s2) -> ReLU -> flatten (32 x 6 x 6 = 1152 for 60 x 60): about a quarter
    /// of Nature's multiply-adds. The first convolution runs as a space-to-depth rearrangement
    /// (4 x 4 blocks become 16 C channels) followed by a k2 s1 convolution, the same function
    /// of the pixels, which the CPU backend computes several times faster than a k8 s4 kernel
    /// on few channels. Images are cropped to a multiple of 4 and need at least 20 x 20.
    Small,
}

/// How the joint processor f_M sees the modalities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JointKind {
    /// GMC: f_M owns its own copy of every trunk (no weight shared with the f_u).
    #[default]
    Separate,
    /// f_M fuses the outputs of the unimodal trunks (concatenate -> Linear): one trunk pass per
    /// modality serves both f_u and f_M.
    SharedTrunk,
}

/// Encoder architecture. Defaults are GMC's (docs/M3IXUP.md section 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    /// Conv stack for image modalities: `"gmc"` or `"nature"`.
    pub pixel_trunk: PixelTrunk,
    /// Joint processor: `"separate"` (GMC, its own trunks) or `"shared-trunk"`.
    pub joint: JointKind,
    /// Hidden widths of the MLP trunk of vector modalities (GMC: 50, 50, each followed by Swish).
    pub mlp_hidden: Vec<usize>,
    /// Common width of h_u and h_M, the output of every processor (GMC: 64).
    pub feature_dim: usize,
    /// Hidden width of the projection head g (GMC: 128).
    pub head_hidden: usize,
    /// Size of the L2-normalised latent z (GMC: 10).
    pub latent_dim: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            pixel_trunk: PixelTrunk::Gmc,
            joint: JointKind::Separate,
            mlp_hidden: vec![50, 50],
            feature_dim: 64,
            head_hidden: 128,
            latent_dim: 10,
        }
    }
}

impl EncoderConfig {
    /// Checks every value; errors name the field.
    pub fn validate(&self) -> Result<(), EncoderError> {
        let bad =
            |field: &str, reason: &str| Err(EncoderError::InvalidConfig { field: field.into(), reason: reason.into() });
        if self.mlp_hidden.is_empty() {
            return bad("mlp_hidden", "needs at least one hidden layer");
        }
        if self.mlp_hidden.contains(&0) {
            return bad("mlp_hidden", "widths must be positive");
        }
        for (field, v) in
            [("feature_dim", self.feature_dim), ("head_hidden", self.head_hidden), ("latent_dim", self.latent_dim)]
        {
            if v == 0 {
                return bad(field, "must be positive");
            }
        }
        Ok(())
    }

    /// Builds the encoder for `space`: one processor per modality in the space's order, the
    /// joint processor and the shared head. Every size comes from the specs.
    pub fn init<B: Backend>(&self, space: &ObsSpace, device: &B::Device) -> Result<M3ixupEncoder<B>, EncoderError> {
        self.validate()?;
        let mut unimodal = Vec::with_capacity(space.len());
        let mut joint_trunks = Vec::new();
        let mut joint_in = 0;
        for (name, spec) in space.iter() {
            let trunk = Trunk::new(name, spec, self, device)?;
            joint_in += trunk.out_dim();
            let proj = LinearConfig::new(trunk.out_dim(), self.feature_dim).init(device);
            unimodal.push(ModalityProcessor { trunk, proj });
            if self.joint == JointKind::Separate {
                joint_trunks.push(Trunk::new(name, spec, self, device)?);
            }
        }
        let joint = JointProcessor {
            trunks: joint_trunks,
            proj: LinearConfig::new(joint_in, self.feature_dim).init(device),
            shared_trunk: self.joint == JointKind::SharedTrunk,
        };
        let head = ProjectionHead {
            hidden: LinearConfig::new(self.feature_dim, self.head_hidden).init(device),
            out: LinearConfig::new(self.head_hidden, self.latent_dim).init(device),
        };
        let encoder = M3ixupEncoder {
            unimodal,
            joint,
            head,
            modality_names: space.names().map(String::from).collect(),
            image_modalities: space.iter().map(|(_, s)| s.is_image()).collect(),
            feature_dim: self.feature_dim,
            latent_dim: self.latent_dim,
        };
        // burn initialises parameters lazily, and a clone of an uninitialised parameter draws its
        // own values: materialise them now, so clones (target networks, the detached head) share
        // weights and the backend seed fixes them in construction order.
        Ok(encoder.map(&mut Materialize))
    }
}

/// The factor a trunk multiplies its raw input by: `1 / max(high)` for `u8` modalities (so 0/1
/// pixels stay 0/1 and 0..255 pixels land in [0, 1]), 1 for `f32` modalities (GMC feeds its
/// sound features unscaled).
pub fn input_scale(spec: &ModalitySpec) -> f32 {
    match spec.dtype {
        DType::U8 => {
            let high = spec.high.iter().copied().fold(0.0f32, f32::max);
            if high > 0.0 {
                1.0 / high
            } else {
                1.0
            }
        }
        DType::F32 => 1.0,
    }
}

/// Activation applied after every trunk layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// x * sigmoid(x) (GMC's Swish).
    Swish,
    Relu,
}

impl Act {
    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Act::Swish => silu(x),
            Act::Relu => relu(x),
        }
    }
}

/// Output size of a convolution along one axis, `None` when the input is smaller than the kernel.
fn conv_out(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    (size + 2 * pad).checked_sub(kernel).map(|d| d / stride + 1)
}

/// One convolution of a trunk: square kernel, stride and padding.
#[derive(Clone, Copy, Debug)]
struct ConvLayer {
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    bias: bool,
}

/// GMC (docs/M3IXUP.md section 1): k4 s2 p1, no bias, 32 then 64 channels.
const GMC_CONVS: &[ConvLayer] = &[
    ConvLayer { out: 32, kernel: 4, stride: 2, pad: 1, bias: false },
    ConvLayer { out: 64, kernel: 4, stride: 2, pad: 1, bias: false },
];

/// Nature-DQN (Mnih et al. 2015): 8/4, 4/2, 3/1, no padding.
const NATURE_CONVS: &[ConvLayer] = &[
    ConvLayer { out: 32, kernel: 8, stride: 4, pad: 0, bias: true },
    ConvLayer { out: 64, kernel: 4, stride: 2, pad: 0, bias: true },
    ConvLayer { out: 64, kernel: 3, stride: 1, pad: 0, bias: true },
];

/// The compact stack after a 4 x 4 space-to-depth: k2 s1 on the blocks is k8 s4 on the pixels.
const SMALL_CONVS: &[ConvLayer] = &[
    ConvLayer { out: 16, kernel: 2, stride: 1, pad: 0, bias: true },
    ConvLayer { out: 32, kernel: 4, stride: 2, pad: 0, bias: true },
];
const SMALL_BLOCK: usize = 4;

/// Conv stack of an image modality: `[B, C, H, W] -> [B, C' * H' * W']`.
#[derive(Module, Debug)]
pub struct ConvTrunk<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    act: Act,
    /// Side of the space-to-depth blocks applied before the convolutions (1 = none).
    block: usize,
    input_scale: f32,
    out_dim: usize,
}

impl<B: Backend> ConvTrunk<B> {
    fn new(name: &str, spec: &ModalitySpec, kind: PixelTrunk, device: &B::Device) -> Result<Self, EncoderError> {
        let (layers, act, block) = match kind {
            PixelTrunk::Gmc => (GMC_CONVS, Act::Swish, 1),
            PixelTrunk::Nature => (NATURE_CONVS, Act::Relu, 1),
            PixelTrunk::Small => (SMALL_CONVS, Act::Relu, SMALL_BLOCK),
        };
        let (mut c, mut h, mut w) = (spec.shape[0] * block * block, spec.shape[1] / block, spec.shape[2] / block);
        let mut convs = Vec::with_capacity(layers.len());
        for &ConvLayer { out, kernel: k, stride: s, pad: p, bias } in layers {
            let (Some(h2), Some(w2)) = (conv_out(h, k, s, p), conv_out(w, k, s, p)) else {
                return Err(EncoderError::UnsupportedModality {
                    modality: name.into(),
                    reason: format!("image {:?} is too small for the {kind:?} conv trunk", spec.shape),
                });
            };
            convs.push(
                Conv2dConfig::new([c, out], [k, k])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .with_bias(bias)
                    .init(device),
            );
            (c, h, w) = (out, h2, w2);
        }
        Ok(Self { convs, act, block, input_scale: input_scale(spec), out_dim: c * h * w })
    }

    /// `[B, C, H, W]` raw values -> `[B, out_dim]` (flattened in `[C', H', W']` order).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.rest(self.first_layer(x))
    }

    /// The first convolution before its activation. On flex the convolutions run on pixel rows
    /// ([`crate::representation::conv`]): the space-to-depth is the gather that makes the first rows, the input
    /// scale is folded into the first kernel, and empty pixels are skipped. Other backends keep
    /// their native convolution kernels (oneDNN, cuDNN, CubeCL's), which the gathers would
    /// replace with more memory traffic.
    pub fn first_layer(&self, x: Tensor<B, 4>) -> FirstLayer<B> {
        let [n, c, h, w] = x.dims();
        let conv = &self.convs[0];
        if !uses_pixel_rows::<B>(&x.device()) {
            let x = if self.input_scale != 1.0 { x.mul_scalar(self.input_scale) } else { x };
            let x = if self.block > 1 { space_to_depth(x, self.block) } else { x };
            return FirstLayer::Image(conv.forward(x));
        }
        let geom = ConvGeometry::of(conv, c * self.block * self.block, h / self.block, w / self.block);
        // Images are mostly empty (binary pixels): the first layer multiplies occupied rows only.
        let rows = conv_rows_sparse(conv, image_rows(x, self.block), n, &geom, self.input_scale);
        FirstLayer::Rows { rows, batch: n, height: geom.out_height, width: geom.out_width }
    }

    /// The rest of the trunk after [`Self::first_layer`]: `[B, out_dim]`.
    pub fn rest(&self, first: FirstLayer<B>) -> Tensor<B, 2> {
        match first {
            FirstLayer::Rows { mut rows, batch, mut height, mut width } => {
                rows = self.act.apply(rows);
                for conv in &self.convs[1..] {
                    let geom = ConvGeometry::of(conv, rows.dims()[1], height, width);
                    rows = self.act.apply(conv_rows(conv, rows, batch, &geom, 1.0));
                    (height, width) = (geom.out_height, geom.out_width);
                }
                rows_to_flat_nchw(rows, batch)
            }
            FirstLayer::Image(mut x) => {
                x = self.act.apply(x);
                for conv in &self.convs[1..] {
                    x = self.act.apply(conv.forward(x));
                }
                x.flatten(1, 3)
            }
            FirstLayer::Vector(_) => panic!("a conv trunk continues from an image or pixel rows"),
        }
    }
}

/// Whether conv trunks run on pixel rows ([`crate::representation::conv`]) on this backend: on flex, whose own
/// convolution backward is slow (README, "CPU learner speed"), not elsewhere.
pub fn uses_pixel_rows<B: Backend>(device: &B::Device) -> bool {
    B::name(device).contains("flex")
}

/// `[B, C, H, W]` -> `[B, C * k * k, H / k, W / k]`: each k x k block of a channel becomes k * k
/// channels (row-major within the block); rows and columns beyond a multiple of k are cropped.
/// One gather, the same as [`image_rows`] but in NCHW order for a native `Conv2d`.
pub fn space_to_depth<B: Backend>(x: Tensor<B, 4>, k: usize) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let (h2, w2) = (h / k, w / k);
    let mut index = Vec::with_capacity(c * k * k * h2 * w2);
    for ch in 0..c {
        for dy in 0..k {
            for dx in 0..k {
                for y in 0..h2 {
                    for xx in 0..w2 {
                        index.push((ch * h + y * k + dy) * w + xx * k + dx);
                    }
                }
            }
        }
    }
    let index = crate::representation::losses::index_tensor(&index, &x.device());
    x.reshape([b, c * h * w]).select(1, index).reshape([b, c * k * k, h2, w2])
}

/// A trunk's first layer before its activation: the part of a trunk that is linear in the input
/// (an affine map), so the first layer of a mix of inputs is the same mix of first layers,
/// `W(l a + (1 - l) b) + c = l (W a + c) + (1 - l) (W b + c)`. L_in mixes these instead of running
/// the mixed inputs through the first layer again ([`crate::representation::losses`]).
#[derive(Clone, Debug)]
pub enum FirstLayer<B: Backend> {
    /// A conv trunk's pixel rows `[batch * height * width, channels]` (see [`crate::representation::conv`]).
    Rows { rows: Tensor<B, 2>, batch: usize, height: usize, width: usize },
    /// A conv trunk's first feature map `[batch, channels, height, width]` (native convolutions).
    Image(Tensor<B, 4>),
    /// An MLP trunk's first linear layer, `[batch, width]`.
    Vector(Tensor<B, 2>),
}

impl<B: Backend> FirstLayer<B> {
    /// The first `n` samples (a sample's pixel rows are consecutive).
    pub fn first_rows(&self, n: usize) -> Self {
        match self {
            FirstLayer::Rows { rows, batch, height, width } => {
                let per_sample = rows.dims()[0] / batch;
                FirstLayer::Rows {
                    rows: rows.clone().narrow(0, 0, n * per_sample),
                    batch: n,
                    height: *height,
                    width: *width,
                }
            }
            FirstLayer::Image(x) => FirstLayer::Image(x.clone().narrow(0, 0, n)),
            FirstLayer::Vector(x) => FirstLayer::Vector(x.clone().narrow(0, 0, n)),
        }
    }

    /// The samples `samples` (indices), in that order (a sample's pixel rows move together).
    pub fn select(&self, samples: Tensor<B, 1, Int>) -> Self {
        match self {
            FirstLayer::Rows { rows, batch, height, width } => {
                let [count, c] = rows.dims();
                let n = samples.dims()[0];
                let picked = rows.clone().reshape([*batch, count / batch * c]).select(0, samples);
                FirstLayer::Rows {
                    rows: picked.reshape([n * (count / batch), c]),
                    batch: n,
                    height: *height,
                    width: *width,
                }
            }
            FirstLayer::Image(x) => FirstLayer::Image(x.clone().select(0, samples)),
            FirstLayer::Vector(x) => FirstLayer::Vector(x.clone().select(0, samples)),
        }
    }

    /// `mix(a, a, lambda, perm)` over the samples (each sample's rows move together).
    pub fn mix(&self, lambda: f32, perm: &[usize]) -> Self {
        match self {
            FirstLayer::Rows { rows, batch, height, width } => {
                let [count, c] = rows.dims();
                let per_sample = rows.clone().reshape([*batch, count / batch * c]);
                let mixed = crate::representation::losses::mix(per_sample.clone(), per_sample, lambda, perm);
                FirstLayer::Rows { rows: mixed.reshape([count, c]), batch: *batch, height: *height, width: *width }
            }
            FirstLayer::Image(x) => {
                FirstLayer::Image(crate::representation::losses::mix(x.clone(), x.clone(), lambda, perm))
            }
            FirstLayer::Vector(x) => {
                FirstLayer::Vector(crate::representation::losses::mix(x.clone(), x.clone(), lambda, perm))
            }
        }
    }
}

/// MLP trunk of a vector modality: `[B, d] -> [B, last hidden]`, every layer followed by Swish.
#[derive(Module, Debug)]
pub struct MlpTrunk<B: Backend> {
    pub layers: Vec<Linear<B>>,
    input_scale: f32,
    out_dim: usize,
}

impl<B: Backend> MlpTrunk<B> {
    fn new(spec: &ModalitySpec, hidden: &[usize], device: &B::Device) -> Self {
        let mut d = spec.numel();
        let mut layers = Vec::with_capacity(hidden.len());
        for &w in hidden {
            layers.push(LinearConfig::new(d, w).init(device));
            d = w;
        }
        Self { layers, input_scale: input_scale(spec), out_dim: d }
    }

    /// `[B, d]` -> `[B, hidden]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.rest(self.first_layer(x))
    }

    /// The first linear layer of the scaled input, before its activation.
    pub fn first_layer(&self, x: Tensor<B, 2>) -> FirstLayer<B> {
        let x = if self.input_scale != 1.0 { x.mul_scalar(self.input_scale) } else { x };
        FirstLayer::Vector(self.layers[0].forward(x))
    }

    /// The rest of the trunk after [`Self::first_layer`]: `[B, hidden]`.
    pub fn rest(&self, first: FirstLayer<B>) -> Tensor<B, 2> {
        let FirstLayer::Vector(mut x) = first else { panic!("an MLP trunk continues from a vector") };
        x = silu(x);
        for layer in &self.layers[1..] {
            x = silu(layer.forward(x));
        }
        x
    }
}

/// The trunk of one modality, chosen by the spec's shape.
#[derive(Module, Debug)]
pub enum Trunk<B: Backend> {
    Conv(ConvTrunk<B>),
    Mlp(MlpTrunk<B>),
}

impl<B: Backend> Trunk<B> {
    fn new(name: &str, spec: &ModalitySpec, config: &EncoderConfig, device: &B::Device) -> Result<Self, EncoderError> {
        match spec.shape.len() {
            3 => Ok(Trunk::Conv(ConvTrunk::new(name, spec, config.pixel_trunk, device)?)),
            1 => Ok(Trunk::Mlp(MlpTrunk::new(spec, &config.mlp_hidden, device))),
            _ => Err(EncoderError::UnsupportedModality {
                modality: name.into(),
                reason: format!("shape {:?} is neither an image [C, H, W] nor a vector [d]", spec.shape),
            }),
        }
    }

    /// Width of the flattened trunk output.
    pub fn out_dim(&self) -> usize {
        match self {
            Trunk::Conv(t) => t.out_dim,
            Trunk::Mlp(t) => t.out_dim,
        }
    }

    /// One modality's raw input -> `[B, out_dim]`. Panics when the input kind (image or vector)
    /// does not match the trunk: inputs are built from the same space as the encoder.
    pub fn forward(&self, x: ModalityTensor<B>) -> Tensor<B, 2> {
        self.rest(self.first_layer(x))
    }

    /// The first layer before its activation ([`FirstLayer`]); same panics as [`Self::forward`].
    pub fn first_layer(&self, x: ModalityTensor<B>) -> FirstLayer<B> {
        match (self, x) {
            (Trunk::Conv(t), ModalityTensor::Image(x)) => t.first_layer(x),
            (Trunk::Mlp(t), ModalityTensor::Vector(x)) => t.first_layer(x),
            (Trunk::Conv(_), ModalityTensor::Vector(_)) => panic!("a vector input was given to an image trunk"),
            (Trunk::Mlp(_), ModalityTensor::Image(_)) => panic!("an image input was given to a vector trunk"),
        }
    }

    /// The trunk after its first layer: `[B, out_dim]`.
    pub fn rest(&self, first: FirstLayer<B>) -> Tensor<B, 2> {
        match self {
            Trunk::Conv(t) => t.rest(first),
            Trunk::Mlp(t) => t.rest(first),
        }
    }
}

/// f_u: trunk then a linear projection to the feature width.
#[derive(Module, Debug)]
pub struct ModalityProcessor<B: Backend> {
    pub trunk: Trunk<B>,
    pub proj: Linear<B>,
}

impl<B: Backend> ModalityProcessor<B> {
    /// Raw input -> h_u `[B, feature_dim]`.
    pub fn forward(&self, x: ModalityTensor<B>) -> Tensor<B, 2> {
        self.proj.forward(self.trunk.forward(x))
    }
}

/// f_M: its own trunks (GMC) or the unimodal trunks' outputs, concatenated, then projected.
#[derive(Module, Debug)]
pub struct JointProcessor<B: Backend> {
    /// One trunk per modality (`joint = "separate"`); empty with `"shared-trunk"`.
    pub trunks: Vec<Trunk<B>>,
    /// `[B, sum of trunk widths] -> [B, feature_dim]` (GMC: 14400 + 50 -> 64).
    pub proj: Linear<B>,
    shared_trunk: bool,
}

impl<B: Backend> JointProcessor<B> {
    /// Trunk outputs of every modality, in space order -> h_M `[B, feature_dim]`.
    pub fn fuse(&self, trunk_outputs: Vec<Tensor<B, 2>>) -> Tensor<B, 2> {
        self.proj.forward(Tensor::cat(trunk_outputs, 1))
    }
}

/// g: Linear -> Swish -> Linear -> L2 normalisation, shared by every path.
#[derive(Module, Debug)]
pub struct ProjectionHead<B: Backend> {
    pub hidden: Linear<B>,
    pub out: Linear<B>,
}

impl<B: Backend> ProjectionHead<B> {
    /// h `[N, feature_dim]` -> z `[N, latent_dim]` with unit rows.
    pub fn forward(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        l2_normalize(self.out.forward(silu(self.hidden.forward(h))))
    }

    /// The same head with every parameter detached from the autodiff graph: a gradient taken
    /// through it reaches its input only (used by the inner steps of L_adapt and L_mix).
    pub fn detached(&self) -> Self {
        self.clone().map(&mut DetachParams)
    }
}

/// Maps every parameter to itself; `Param::consume` initialises it on the way.
pub(crate) struct Materialize;

impl<B: Backend> ModuleMapper<B> for Materialize {}

struct DetachParams;

impl<B: Backend> ModuleMapper<B> for DetachParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.detach(), mapper)
    }
}

/// Rows divided by their L2 norm (PyTorch's `F.normalize`: the norm is floored at 1e-12; the floor
/// is applied to the squared norm so the gradient stays finite at zero).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).clamp_min(1e-24).sqrt(); // [N, 1]
    x.div(norm)
}

/// One modality of a batch: `[B, C, H, W]` for images, `[B, d]` for vectors, raw values as f32.
#[derive(Clone, Debug)]
pub enum ModalityTensor<B: Backend> {
    Image(Tensor<B, 4>),
    Vector(Tensor<B, 2>),
}

impl<B: Backend> ModalityTensor<B> {
    pub fn batch_size(&self) -> usize {
        match self {
            ModalityTensor::Image(x) => x.dims()[0],
            ModalityTensor::Vector(x) => x.dims()[0],
        }
    }

    /// Applies a shape-preserving function to the tensor, whatever its rank.
    pub fn map(
        self,
        f4: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
        f2: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Self {
        match self {
            ModalityTensor::Image(x) => ModalityTensor::Image(f4(x)),
            ModalityTensor::Vector(x) => ModalityTensor::Vector(f2(x)),
        }
    }
}

/// A batch of observations: one tensor per modality, in the space's (sorted) order.
#[derive(Clone, Debug)]
pub struct MultimodalInput<B: Backend> {
    pub modalities: Vec<ModalityTensor<B>>,
}

impl<B: Backend> MultimodalInput<B> {
    pub fn new(modalities: Vec<ModalityTensor<B>>) -> Self {
        Self { modalities }
    }

    pub fn batch_size(&self) -> usize {
        self.modalities.first().map(|m| m.batch_size()).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.modalities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modalities.is_empty()
    }

    /// The first `n` rows of every modality.
    pub fn first_rows(&self, n: usize) -> Self {
        let modalities = self.modalities.iter().map(|m| m.clone().map(|x| x.narrow(0, 0, n), |x| x.narrow(0, 0, n)));
        Self { modalities: modalities.collect() }
    }

    /// Stacks observations into one tensor per modality (u8 converted to f32, values unchanged)
    /// and collects their presence masks.
    pub fn from_obs(space: &ObsSpace, obs: &[Obs], device: &B::Device) -> Result<(Self, Presence), EncoderError> {
        let n = obs.len();
        let mut modalities = Vec::with_capacity(space.len());
        for (i, (name, spec)) in space.iter().enumerate() {
            let numel = spec.numel();
            let mut flat = Vec::with_capacity(n * numel);
            for (k, o) in obs.iter().enumerate() {
                let data = o.data.get(i).ok_or_else(|| EncoderError::BadObservation {
                    index: k,
                    reason: format!("has {} modalities, the space declares {}", o.data.len(), space.len()),
                })?;
                if data.len() != numel {
                    return Err(EncoderError::BadObservation {
                        index: k,
                        reason: format!("modality `{name}` holds {} values, expected {numel}", data.len()),
                    });
                }
                match data {
                    ModalityData::U8(v) => flat.extend(v.iter().map(|&b| b as f32)),
                    ModalityData::F32(v) => flat.extend_from_slice(v),
                }
            }
            modalities.push(if spec.is_image() {
                let s = &spec.shape;
                ModalityTensor::Image(Tensor::from_data(TensorData::new(flat, [n, s[0], s[1], s[2]]), device))
            } else {
                ModalityTensor::Vector(Tensor::from_data(TensorData::new(flat, [n, numel]), device))
            });
        }
        let mask = obs.iter().flat_map(|o| o.present.iter().copied()).collect::<Vec<_>>();
        if mask.len() != n * space.len() {
            return Err(EncoderError::BadObservation {
                index: 0,
                reason: "presence masks do not match the space".into(),
            });
        }
        Ok((Self { modalities }, Presence { batch: n, modalities: space.len(), mask }))
    }
}

/// Which modality of which row is present, on the host (row-major `[batch, modalities]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    batch: usize,
    modalities: usize,
    mask: Vec<bool>,
}

impl Presence {
    /// Every modality present in every row.
    pub fn all(batch: usize, modalities: usize) -> Self {
        Self { batch, modalities, mask: vec![true; batch * modalities] }
    }

    /// One row per sample, one flag per modality.
    pub fn from_rows(rows: &[Vec<bool>]) -> Self {
        let modalities = rows.first().map(|r| r.len()).unwrap_or(0);
        assert!(rows.iter().all(|r| r.len() == modalities), "every presence row needs the same length");
        Self { batch: rows.len(), modalities, mask: rows.concat() }
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn num_modalities(&self) -> usize {
        self.modalities
    }

    pub fn get(&self, row: usize, modality: usize) -> bool {
        self.mask[row * self.modalities + modality]
    }

    pub fn row(&self, row: usize) -> &[bool] {
        &self.mask[row * self.modalities..(row + 1) * self.modalities]
    }

    /// `true` when every modality of `row` is present.
    pub fn complete(&self, row: usize) -> bool {
        self.row(row).iter().all(|&p| p)
    }
}

/// Everything one forward pass computes, for the losses.
#[derive(Clone, Debug)]
pub struct Features<B: Backend> {
    /// h_u = f_u(x_u), `[B, feature_dim]` each, in space order.
    pub unimodal: Vec<Tensor<B, 2>>,
    /// h_M = f_M(x), `[B, feature_dim]`.
    pub joint: Tensor<B, 2>,
    /// The first layer of each unimodal trunk f_u, in space order ([`FirstLayer`]).
    pub first_layers: Vec<FirstLayer<B>>,
}

impl<B: Backend> Features<B> {
    /// The features of the batch's rows `rows` (indices), in that order.
    pub fn select(&self, rows: Tensor<B, 1, Int>) -> Self {
        Self {
            unimodal: self.unimodal.iter().map(|h| h.clone().select(0, rows.clone())).collect(),
            joint: self.joint.clone().select(0, rows.clone()),
            first_layers: self.first_layers.iter().map(|f| f.select(rows.clone())).collect(),
        }
    }

    /// The features of the batch's first `n` rows.
    pub fn first_rows(&self, n: usize) -> Self {
        Self {
            unimodal: self.unimodal.iter().map(|h| h.clone().narrow(0, 0, n)).collect(),
            joint: self.joint.clone().narrow(0, 0, n),
            first_layers: self.first_layers.iter().map(|f| f.first_rows(n)).collect(),
        }
    }
}

/// The multimodal encoder: processors f_u, joint processor f_M, shared head g.
#[derive(Module, Debug)]
pub struct M3ixupEncoder<B: Backend> {
    pub unimodal: Vec<ModalityProcessor<B>>,
    pub joint: JointProcessor<B>,
    pub head: ProjectionHead<B>,
    modality_names: Vec<String>,
    image_modalities: Vec<bool>,
    feature_dim: usize,
    latent_dim: usize,
}

impl<B: Backend> M3ixupEncoder<B> {
    pub fn num_modalities(&self) -> usize {
        self.unimodal.len()
    }

    pub fn modality_names(&self) -> &[String] {
        &self.modality_names
    }

    /// Width of h (pre-projection features).
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Width of z.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    fn check_input(&self, x: &MultimodalInput<B>) {
        assert_eq!(
            x.len(),
            self.num_modalities(),
            "the input has {} modalities, the encoder was built for {:?}",
            x.len(),
            self.modality_names
        );
    }

    /// h_u = f_u(x_u) for modality `u` (index in space order): `[B, feature_dim]`.
    pub fn unimodal_feature(&self, u: usize, x: ModalityTensor<B>) -> Tensor<B, 2> {
        self.unimodal[u].forward(x)
    }

    /// h_u for every modality.
    pub fn unimodal_features(&self, x: &MultimodalInput<B>) -> Vec<Tensor<B, 2>> {
        self.check_input(x);
        x.modalities.iter().enumerate().map(|(u, m)| self.unimodal_feature(u, m.clone())).collect()
    }

    /// h_M = f_M(x): `[B, feature_dim]`.
    pub fn joint_features(&self, x: &MultimodalInput<B>) -> Tensor<B, 2> {
        self.check_input(x);
        let trunks = if self.joint.shared_trunk {
            self.unimodal.iter().map(|p| &p.trunk).collect::<Vec<_>>()
        } else {
            self.joint.trunks.iter().collect()
        };
        let outs = trunks.iter().zip(&x.modalities).map(|(t, m)| t.forward(m.clone())).collect();
        self.joint.fuse(outs)
    }

    /// Every h_u and h_M in one pass; with `joint = "shared-trunk"` each trunk runs once. Keeps
    /// each unimodal trunk's first layer for L_in.
    pub fn features(&self, x: &MultimodalInput<B>) -> Features<B> {
        self.check_input(x);
        let first_layers: Vec<_> =
            self.unimodal.iter().zip(&x.modalities).map(|(p, m)| p.trunk.first_layer(m.clone())).collect();
        let trunk_out: Vec<_> = self.unimodal.iter().zip(&first_layers).map(|(p, f)| p.trunk.rest(f.clone())).collect();
        let unimodal = self.unimodal.iter().zip(&trunk_out).map(|(p, t)| p.proj.forward(t.clone())).collect();
        let joint = if self.joint.shared_trunk { self.joint.fuse(trunk_out) } else { self.joint_features(x) };
        Features { unimodal, joint, first_layers }
    }

    /// z = g(h): `[N, feature_dim] -> [N, latent_dim]`, unit rows.
    pub fn project(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(h)
    }

    /// The latent for the policy, `[B, latent_dim]` (docs/M3IXUP.md section 1): rows with every
    /// modality present get z_M; other rows the mean of the z_u of their present modalities (not
    /// renormalised); rows with no modality present get zeros.
    pub fn encode(&self, x: &MultimodalInput<B>, presence: &Presence) -> Tensor<B, 2> {
        self.fallback(x, presence, true)
    }

    /// The same rule on the pre-projection features (h_M, or the mean of the present h_u),
    /// `[B, feature_dim]`, for policies that read features rather than latents.
    pub fn encode_features(&self, x: &MultimodalInput<B>, presence: &Presence) -> Tensor<B, 2> {
        self.fallback(x, presence, false)
    }

    fn fallback(&self, x: &MultimodalInput<B>, presence: &Presence, latent: bool) -> Tensor<B, 2> {
        self.check_input(x);
        let b = x.batch_size();
        let n = self.num_modalities();
        assert_eq!((presence.batch(), presence.num_modalities()), (b, n), "presence mask shape");
        let out = |h: Tensor<B, 2>| if latent { self.project(h) } else { h };
        let complete: Vec<bool> = (0..b).map(|k| presence.complete(k)).collect();
        if complete.iter().all(|&c| c) {
            return out(self.joint_features(x));
        }
        // h_M where some row is complete, and the h_u that some row falls back to. With shared
        // trunks one pass gives them all: h_M needs every trunk's output, which h_u reuse (run
        // apart, the pixel trunk ran twice, for h_M and again for h_pixels).
        let any_complete = complete.iter().any(|&c| c);
        let (joint, mut unimodal) = if any_complete && self.joint.shared_trunk {
            let f = self.features(x);
            (Some(f.joint), f.unimodal.into_iter().map(Some).collect())
        } else {
            (any_complete.then(|| self.joint_features(x)), vec![None; n])
        };
        let dim = if latent { self.latent_dim() } else { self.feature_dim() };
        self.by_presence(
            presence,
            joint.map(out),
            |u| out(unimodal[u].take().unwrap_or_else(|| self.unimodal_feature(u, x.modalities[u].clone()))),
            dim,
            &x.modalities[0].device(),
        )
    }

    /// The missing-modality rule of [`Self::encode`] on representations of the rows (`[B, dim]`
    /// each): complete rows take `joint`'s row (given when some row is complete), the others
    /// the mean of `unimodal(u)`'s rows over their present modalities (`unimodal` is called once
    /// for each modality some row falls back to), rows with none zeros.
    pub fn by_presence(
        &self,
        presence: &Presence,
        joint: Option<Tensor<B, 2>>,
        mut unimodal: impl FnMut(usize) -> Tensor<B, 2>,
        dim: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let b = presence.batch();
        let n = self.num_modalities();
        // Per row: 1 for complete rows; for the others each present modality weighs 1/count.
        let mut joint_w = vec![0.0f32; b];
        let mut uni_w = vec![vec![0.0f32; b]; n];
        for k in 0..b {
            if presence.complete(k) {
                joint_w[k] = 1.0;
            } else {
                let count = presence.row(k).iter().filter(|&&p| p).count();
                for (u, w) in uni_w.iter_mut().enumerate() {
                    if presence.get(k, u) {
                        w[k] = 1.0 / count as f32;
                    }
                }
            }
        }
        let weight = |w: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(w, [b, 1]), device);
        let mut z = Tensor::<B, 2>::zeros([b, dim], device);
        if joint_w.iter().any(|&v| v > 0.0) {
            let joint = joint.expect("the joint representation, for the complete rows");
            z = z + joint * weight(joint_w);
        }
        for (u, w) in uni_w.into_iter().enumerate() {
            if w.iter().any(|&v| v > 0.0) {
                z = z + unimodal(u) * weight(w);
            }
        }
        z
    }

    /// `true` for modalities processed by a conv trunk.
    pub fn is_image(&self, u: usize) -> bool {
        self.image_modalities[u]
    }
}

impl<B: Backend> ModalityTensor<B> {
    pub fn device(&self) -> B::Device {
        match self {
            ModalityTensor::Image(x) => x.device(),
            ModalityTensor::Vector(x) => x.device(),
        }
    }
}
