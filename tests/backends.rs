//! Backend-generic tests: the encoders, the losses and one PPO update on every backend this test
//! binary was built with that runs here (Flex always; LibTorch on the CPU with `--features tch`;
//! burn's wgpu backend with `--features wgpu`, on wgpu's preferred adapter: on a machine without
//! a GPU, Mesa's software Vulkan driver lavapipe), and the cross-backend check that one M3ixup
//! loss evaluation agrees with Flex's within 1e-4 for the same parameters, data and mixup draws.
//!
//! Each check is a generic function of `B: AutodiffBackend` (the `checks` module, reusable for
//! any backend); `backend_tests!` instantiates them for one backend and device.
//!
//!     cargo test --test backends                      # Flex
//!     eval "$(scripts/setup-libtorch.sh)"
//!     cargo test --features tch --test backends       # Flex and LibTorch CPU, and the agreement
//!     cargo test --features wgpu --test backends      # Flex and wgpu (apt-get install mesa-vulkan-drivers)

use std::sync::Mutex;

/// Backends seed one global RNG (burn's `B::seed`, LibTorch's `manual_seed`): the tests that
/// initialise parameters take this lock.
static BACKEND_RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub mod checks {
    use std::fs;
    use std::path::{Path, PathBuf};

    use burn::module::{AutodiffModule, Module};
    use burn::optim::AdamConfig;
    use burn::prelude::*;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::backend::AutodiffBackend;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use m3ixup::agents::algorithms::ppo::{train, PpoConfig};
    use m3ixup::agents::envs::VecEnvConfig;
    use m3ixup::agents::infra::harness::TrainOptions;
    use m3ixup::agents::infra::run::RunDir;
    use m3ixup::agents::representation::losses::{gmc_infonce, info_nce, soft_nce};
    use m3ixup::agents::representation::pretrain::{train_step, SampleSet};
    use m3ixup::agents::{m3ixup_loss, EncoderConfig, M3ixupEncoder, M3ixupLossConfig, M3ixupReport};
    use m3ixup::agents::{JointKind, PixelTrunk};
    use m3ixup::config::load;

    /// Random-policy observations of multimodal-pendulum (pixels u8[2,60,60], sound f32[12]),
    /// the same on every call.
    pub fn samples(n: usize) -> SampleSet {
        let vec = VecEnvConfig { num_envs: 4, workers: 0, seed: 3, ..VecEnvConfig::default() };
        SampleSet::collect_random("multimodal-pendulum", &toml::Table::new(), n, vec, None).unwrap()
    }

    /// The encoders the tests cover: GMC's (conv trunks, separate joint) and the PPO configs'
    /// compact one (space-to-depth trunk, shared trunks), small widths.
    pub fn encoder_configs() -> Vec<EncoderConfig> {
        vec![
            EncoderConfig { feature_dim: 32, head_hidden: 32, latent_dim: 8, ..EncoderConfig::default() },
            EncoderConfig {
                pixel_trunk: PixelTrunk::Small,
                joint: JointKind::SharedTrunk,
                mlp_hidden: vec![32],
                feature_dim: 32,
                head_hidden: 32,
                latent_dim: 8,
            },
        ]
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// Shapes of every output of a forward pass, unit-norm latents, finite values.
    pub fn encoder_forward<B: AutodiffBackend>(device: &B::Device) {
        let data = samples(8);
        for config in encoder_configs() {
            let encoder: M3ixupEncoder<B> = config.init(data.space(), device).unwrap();
            let batch = data.batch::<B>(&(0..8).collect::<Vec<_>>(), device);
            let feats = encoder.features(&batch);
            assert_eq!(feats.unimodal.len(), 2);
            for h in &feats.unimodal {
                assert_eq!(h.dims(), [8, config.feature_dim]);
            }
            assert_eq!(feats.joint.dims(), [8, config.feature_dim]);
            let z = encoder.project(feats.joint);
            assert_eq!(z.dims(), [8, config.latent_dim]);
            for norm in values(z.square().sum_dim(1).sqrt()) {
                assert!((norm - 1.0).abs() < 1e-4, "latent rows are unit vectors, got norm {norm}");
            }
        }
    }

    /// GMC and SoftNCE identities on fixed latents: `soft_nce` with lambda = 1 is `info_nce`,
    /// `gmc_infonce` is the sum of the per-modality terms, and a perfectly aligned batch has a
    /// lower loss than a shuffled one.
    pub fn loss_identities<B: AutodiffBackend>(device: &B::Device) {
        let (b, d) = (6, 4);
        let rows = |shift: usize| -> Tensor<B, 2> {
            let v: Vec<f32> = (0..b * d).map(|i| (((i + shift) * 7919) % 23) as f32 / 23.0 - 0.5).collect();
            let t = Tensor::<B, 2>::from_data(TensorData::new(v, [b, d]), device);
            let n = t.clone().square().sum_dim(1).sqrt();
            t / n
        };
        let (zm, z1, z2) = (rows(0), rows(5), rows(11));
        let a = values(info_nce(zm.clone(), z1.clone(), 0.3))[0];
        let perm: Vec<usize> = (0..b).rev().collect();
        let s = values(soft_nce(zm.clone(), z1.clone(), 1.0, &perm, 0.3))[0];
        assert!((a - s).abs() < 1e-5, "soft_nce(lambda = 1) = info_nce: {s} vs {a}");
        let both = values(gmc_infonce(zm.clone(), &[z1.clone(), z2.clone()], 0.3))[0];
        let sum = a + values(info_nce(zm.clone(), z2, 0.3))[0];
        assert!((both - sum).abs() < 1e-5, "gmc_infonce sums the modalities: {both} vs {sum}");
        let aligned = values(info_nce(zm.clone(), zm, 0.3))[0];
        assert!(aligned < a, "aligned views have the lower loss: {aligned} vs {a}");
    }

    /// The full M3ixup loss (every term on) is finite, its backward pass reaches the parameters,
    /// and a few Adam steps on one batch lower it.
    pub fn m3ixup_training<B: AutodiffBackend>(device: &B::Device) {
        let data = samples(16);
        let indices: Vec<usize> = (0..16).collect();
        let loss = M3ixupLossConfig::default();
        for config in encoder_configs() {
            // Seeded (the callers hold the RNG lock): an unseeded init let 4 Adam steps raise
            // the loss now and then on LibTorch (27.484 -> 27.496 in one clean-clone run).
            B::seed(device, 11);
            let mut encoder: M3ixupEncoder<B> = config.init(data.space(), device).unwrap();
            let batch = data.batch::<B>(&indices, device);
            let mut optim = AdamConfig::new().init::<B, M3ixupEncoder<B>>();
            let first = {
                let (total, report) = m3ixup_loss(&encoder, &batch, &loss, &mut StdRng::seed_from_u64(0));
                let grads = total.backward();
                let w = encoder.head.out.weight.val();
                let g = w.grad(&grads).expect("the head's weight gets a gradient");
                assert!(values(g.abs().sum())[0] > 0.0, "non-zero gradient");
                assert!(report.total.is_finite(), "{report:?}");
                for t in [report.gmc, report.input, report.manifold, report.adapt, report.explore] {
                    assert!(t.expect("every term is on").is_finite(), "{report:?}");
                }
                report.total
            };
            for _ in 0..8 {
                (encoder, _) = train_step(encoder, &mut optim, &batch, &loss, 1e-3, &mut StdRng::seed_from_u64(0));
            }
            let (_, after) = m3ixup_loss(&encoder, &batch, &loss, &mut StdRng::seed_from_u64(0));
            assert!(after.total < first, "8 Adam steps on the same batch lower the loss: {first} -> {}", after.total);
        }
    }

    /// One PPO update (the smoke config: a rollout of 4 environments x 16 steps, 2 epochs of
    /// minibatches of 32, every M3ixup term on as the auxiliary loss): finite losses, a checkpoint.
    pub fn ppo_update<B: AutodiffBackend>(device: &B::Device, tag: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ppo-smoke.toml");
        let config: PpoConfig = load(Some(&path), &[]).unwrap();
        config.validate().unwrap();
        let dir: PathBuf =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("backends-ppo-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let run = RunDir::at(&dir).unwrap();
        let options = TrainOptions { max_updates: Some(1), ..TrainOptions::default() };
        let summary = train::<B>(&config, &run, device, &options).unwrap();
        assert_eq!((summary.updates, summary.global_step), (1, 64));
        let row = &summary.rows[0];
        for key in ["losses/policy", "losses/value", "losses/entropy", "losses/aux", "losses/approx_kl"] {
            let v = row.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("missing metric {key}")).1;
            assert!(v.is_finite(), "{key} = {v}");
        }
        assert!(dir.join("checkpoint.toml").is_file());
        fs::remove_dir_all(dir).unwrap();
    }

    /// The encoder's parameters as bytes (burn's binary record, full precision).
    pub fn encoder_bytes<B: Backend>(encoder: M3ixupEncoder<B>) -> Vec<u8> {
        BinBytesRecorder::<FullPrecisionSettings>::default().record(encoder.into_record(), ()).unwrap()
    }

    /// An encoder of `config` on `device` with the parameters of `bytes`.
    pub fn encoder_from_bytes<B: Backend>(
        config: &EncoderConfig,
        data: &SampleSet,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> M3ixupEncoder<B> {
        let record = BinBytesRecorder::<FullPrecisionSettings>::default().load(bytes, device).unwrap();
        config.init::<B>(data.space(), device).unwrap().load_record(record)
    }

    /// One evaluation of the full M3ixup loss (every term on, mixup draws from seed 42) of the
    /// encoder with parameters `bytes` on the first 32 samples: the report, and the gradient of
    /// the head's output weight.
    pub fn m3ixup_evaluation<B: AutodiffBackend>(
        config: &EncoderConfig,
        data: &SampleSet,
        bytes: Vec<u8>,
        device: &B::Device,
    ) -> (M3ixupReport, Vec<f32>) {
        let encoder = encoder_from_bytes::<B>(config, data, bytes, device);
        let batch = data.batch::<B>(&(0..32).collect::<Vec<_>>(), device);
        let (total, report) =
            m3ixup_loss(&encoder, &batch, &M3ixupLossConfig::default(), &mut StdRng::seed_from_u64(42));
        let grads = total.backward();
        let grad = encoder.head.out.weight.val().grad(&grads).unwrap();
        (report, values(grad))
    }

    /// Same parameters, same data, same mixup draws: one M3ixup loss evaluation (every term on,
    /// the adapting and exploring inner steps included) on `T` agrees with Flex's within 1e-4,
    /// term by term, and so does the gradient of the head's output weight.
    pub fn m3ixup_loss_agrees_with_flex<T: AutodiffBackend>(device: &T::Device, name: &str) {
        type F = burn::backend::Autodiff<burn::backend::Flex>;
        let data = samples(32);
        let fd = Default::default();
        for config in encoder_configs() {
            let bytes = fresh_encoder_bytes::<F>(&config, &data, &fd);
            let (rf, gf) = m3ixup_evaluation::<F>(&config, &data, bytes.clone(), &fd);
            let (rt, gt) = m3ixup_evaluation::<T>(&config, &data, bytes, device);
            assert_eq!(rf.draws, rt.draws, "the same draws");
            let terms = |r: &M3ixupReport| {
                [Some(r.total), r.gmc, r.input, r.manifold, r.adapt, r.explore].map(|t| t.expect("every term is on"))
            };
            let (tf, tt) = (terms(&rf), terms(&rt));
            println!("{:?} {:?}: flex {tf:?}, {name} {tt:?}", config.pixel_trunk, config.joint);
            for (term, (a, b)) in
                ["total", "gmc", "input", "manifold", "adapt", "explore"].iter().zip(tf.iter().zip(&tt))
            {
                assert!((a - b).abs() <= 1e-4, "{term}: flex {a} vs {name} {b} ({:?})", config.pixel_trunk);
            }
            let max_grad_diff = gf.iter().zip(&gt).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(max_grad_diff <= 1e-4, "head gradient differs by {max_grad_diff} ({name})");
        }
    }

    /// Parameters moved through a record from Flex to `T` and back are bit-identical.
    pub fn encoder_records_move_unchanged<T: AutodiffBackend>(device: &T::Device) {
        use burn::backend::{Autodiff, Flex};
        let data = samples(4);
        let config = &encoder_configs()[1];
        let bytes = fresh_encoder_bytes::<Autodiff<Flex>>(config, &data, &Default::default());
        let moved = encoder_from_bytes::<T::InnerBackend>(config, &data, bytes.clone(), device);
        assert_eq!(encoder_bytes(moved), bytes);
    }

    /// The parameters of a fresh encoder, made on `B` with seed 0 (then moved to any backend).
    pub fn fresh_encoder_bytes<B: AutodiffBackend>(
        config: &EncoderConfig,
        data: &SampleSet,
        device: &B::Device,
    ) -> Vec<u8> {
        B::seed(device, 0);
        encoder_bytes(config.init::<B>(data.space(), device).unwrap().valid())
    }
}

/// Instantiates every check for one backend: `backend_tests!(module, Backend, device)`.
macro_rules! backend_tests {
    ($name:ident, $backend:ty, $device:expr) => {
        mod $name {
            use super::*;
            type B = $backend;

            #[test]
            fn encoder_forward() {
                let _g = rng_lock();
                checks::encoder_forward::<B>(&$device);
            }

            #[test]
            fn loss_identities() {
                checks::loss_identities::<B>(&$device);
            }

            #[test]
            fn m3ixup_training() {
                let _g = rng_lock();
                checks::m3ixup_training::<B>(&$device);
            }

            #[test]
            fn ppo_update() {
                let _g = rng_lock();
                checks::ppo_update::<B>(&$device, stringify!($name));
            }
        }
    };
}

backend_tests!(flex, burn::backend::Autodiff<burn::backend::Flex>, Default::default());

#[cfg(feature = "tch")]
backend_tests!(
    libtorch_cpu,
    burn::backend::Autodiff<burn::backend::LibTorch>,
    burn::backend::libtorch::LibTorchDevice::Cpu
);

/// Instantiates the comparisons with Flex for one backend: `agrees_with_flex!(module, Backend,
/// device)`.
#[allow(unused_macros)]
macro_rules! agrees_with_flex {
    ($name:ident, $backend:ty, $device:expr) => {
        mod $name {
            use super::*;
            type B = $backend;

            #[test]
            fn m3ixup_loss_agrees_with_flex() {
                let _g = rng_lock();
                checks::m3ixup_loss_agrees_with_flex::<B>(&$device, stringify!($name));
            }

            #[test]
            fn encoder_records_move_between_flex_and_it_unchanged() {
                let _g = rng_lock();
                checks::encoder_records_move_unchanged::<B>(&$device);
            }
        }
    };
}

#[cfg(feature = "tch")]
agrees_with_flex!(
    libtorch_cpu_vs_flex,
    burn::backend::Autodiff<burn::backend::LibTorch>,
    burn::backend::libtorch::LibTorchDevice::Cpu
);

#[cfg(feature = "wgpu-base")]
backend_tests!(wgpu, burn::backend::Autodiff<burn::backend::Wgpu>, burn::backend::wgpu::WgpuDevice::DefaultDevice);

#[cfg(feature = "wgpu-base")]
agrees_with_flex!(
    wgpu_vs_flex,
    burn::backend::Autodiff<burn::backend::Wgpu>,
    burn::backend::wgpu::WgpuDevice::DefaultDevice
);

/// A device whose feature is not compiled in, or a GPU that is not there, stops the binaries at
/// start (exit status 1, no run directory), with an error naming the features and devices the
/// binary has.
#[test]
fn binaries_refuse_an_unavailable_device_at_start() {
    let runs =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("backends-refuse-{}", std::process::id()));
    for (bin, device) in [
        (env!("CARGO_BIN_EXE_train"), "cuda:7"),
        (env!("CARGO_BIN_EXE_train"), "libtorch-cuda:7"),
        (env!("CARGO_BIN_EXE_pretrain"), "cuda:7"),
        (env!("CARGO_BIN_EXE_train"), "wgpu:virtual:7"),
    ] {
        let out = std::process::Command::new(bin).args(["--device", device, "--runs-dir"]).arg(&runs).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bin} --device {device}: {stderr}");
        assert!(stderr.contains(&format!("device `{device}`")), "{stderr}");
        assert!(stderr.contains("this binary has the backend features [flex"), "{stderr}");
        assert!(!runs.exists(), "no run directory before the device check");
    }
    // The CUDA kernel options on a device without run-time kernels: refused the same way.
    let log = runs.with_extension("kernels.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--device", "flex", "--kernel-log"])
        .arg(&log)
        .arg("--runs-dir")
        .arg(&runs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "--kernel-log on flex: {stderr}");
    assert!(stderr.contains("--kernel-log applies to cuda:N and wgpu devices only"), "{stderr}");
    assert!(!runs.exists() && !log.exists(), "nothing written before the check");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_train")).args(["--device", "gpu"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a malformed --device is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("flex | libtorch | libtorch-cuda:N | cuda:N"));
}
