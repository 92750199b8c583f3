//! Backend and device selection: the one place where a burn backend is chosen.
//!
//! Library code stays generic over `B: Backend` / `B: AutodiffBackend`; a binary flattens
//! [`DeviceArgs`] into its arguments (`--device`, `--threads`, and for `cuda:N` `--kernel-log`
//! and `--kernel-cache`) and hands a [`BackendJob`] to [`DeviceArgs::run`], which instantiates
//! the job with the concrete backend ([`run_on`] does the same from a bare [`DeviceSpec`]):
//!
//! | `--device` | backend | Cargo feature |
//! |---|---|---|
//! | `flex` | `Autodiff<Flex>`, burn's pure-Rust CPU backend | always |
//! | `libtorch` | `Autodiff<LibTorch>` on the CPU | `tch` |
//! | `libtorch-cuda:N` | `Autodiff<LibTorch>` on CUDA device N | `tch` |
//! | `cuda:N` | `Autodiff<Cuda>`, burn's CubeCL CUDA backend, on device N | `cuda` (fusion + autotune) or `cuda-base`, `cuda-fusion`, `cuda-autotune` ([`CUBECL_KERNELS`]) |
//! | `wgpu`, `wgpu:cpu`, `wgpu:discrete:N`, `wgpu:integrated:N`, `wgpu:virtual:N` | `Autodiff<Wgpu>`, burn's CubeCL wgpu backend (Vulkan, Metal, DirectX 12), on wgpu's preferred adapter or the one named | `wgpu` (fusion + autotune) or `wgpu-base`, `wgpu-fusion`, `wgpu-autotune` |
//!
//! Asking for a device whose feature this binary was not built with, or for a GPU that is not
//! there, fails before any work with an error that lists the features and devices this binary has.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;

/// A device to run on, as given on the command line (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// burn's Flex backend (pure Rust, CPU). The default.
    #[default]
    Flex,
    /// LibTorch on the CPU (feature `tch`).
    LibTorch,
    /// LibTorch on CUDA device N (feature `tch`, a CUDA-enabled libtorch and an NVIDIA GPU).
    LibTorchCuda(usize),
    /// burn's CubeCL CUDA backend on device N (feature `cuda`, an NVIDIA driver and NVRTC).
    Cuda(usize),
    /// burn's CubeCL wgpu backend on a wgpu adapter (feature `wgpu`, a Vulkan, Metal or
    /// DirectX 12 driver; on a machine without a GPU, a software one such as Mesa's lavapipe).
    Wgpu(WgpuAdapter),
}

/// Which wgpu adapter `--device wgpu...` names, as burn's `WgpuDevice` does: by kind and index
/// among the adapters of that kind (wgpu's order, on the platform's graphics API: Vulkan on
/// Linux and Windows, Metal on macOS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WgpuAdapter {
    /// `wgpu`: wgpu's preferred adapter (high-performance first); `CUBECL_WGPU_DEFAULT_DEVICE`
    /// (e.g. `Cpu`, `DiscreteGpu(1)`) overrides it, as in CubeCL.
    Default,
    /// `wgpu:cpu`: a software adapter (Mesa's lavapipe, llvmpipe).
    Cpu,
    /// `wgpu:discrete:N`
    Discrete(usize),
    /// `wgpu:integrated:N`
    Integrated(usize),
    /// `wgpu:virtual:N`
    Virtual(usize),
}

/// The accepted spellings, for help texts and errors.
pub const DEVICE_SYNTAX: &str =
    "flex | libtorch | libtorch-cuda:N | cuda:N | wgpu[:cpu|:discrete:N|:integrated:N|:virtual:N]";

impl DeviceSpec {
    /// The Cargo feature this device needs (`None`: always compiled in).
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            DeviceSpec::Flex => None,
            DeviceSpec::LibTorch | DeviceSpec::LibTorchCuda(_) => Some("tch"),
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Wgpu(_) => Some("wgpu"),
        }
    }

    /// Whether the device is a GPU (a wgpu software adapter is not).
    pub fn is_gpu(&self) -> bool {
        match self {
            DeviceSpec::LibTorchCuda(_) | DeviceSpec::Cuda(_) => true,
            DeviceSpec::Wgpu(adapter) => *adapter != WgpuAdapter::Cpu,
            DeviceSpec::Flex | DeviceSpec::LibTorch => false,
        }
    }

    /// Whether burn runs the device through CubeCL, which compiles its kernels at run time (and
    /// so takes `--kernel-log` and `--kernel-cache`).
    pub fn is_cubecl(&self) -> bool {
        matches!(self, DeviceSpec::Cuda(_) | DeviceSpec::Wgpu(_))
    }

    /// The backend's name, for logs and benchmark tables.
    pub fn backend_name(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "Autodiff<Flex>",
            DeviceSpec::LibTorch | DeviceSpec::LibTorchCuda(_) => "Autodiff<LibTorch>",
            DeviceSpec::Cuda(_) => "Autodiff<Cuda>",
            DeviceSpec::Wgpu(_) => "Autodiff<Wgpu>",
        }
    }

    /// The backend's name and, for CubeCL devices, how this binary builds its kernels
    /// ([`CUBECL_KERNELS`]): for startup lines and benchmark tables.
    pub fn describe(&self) -> String {
        if self.is_cubecl() {
            format!("{}, {CUBECL_KERNELS}", self.backend_name())
        } else {
            self.backend_name().to_string()
        }
    }
}

/// How burn's CubeCL backends (CUDA and wgpu) make their kernels in this binary: kernel fusion
/// and autotuning (features `cuda`, `wgpu`), one of them (`*-fusion`, `*-autotune`) or neither
/// (`*-base`). burn's `fusion` and `autotune` features are one switch for both runtimes, so a
/// binary with both runtimes builds both the same way.
pub const CUBECL_KERNELS: &str = {
    let fusion = cfg!(any(feature = "cuda-fusion", feature = "wgpu-fusion"));
    let autotune = cfg!(any(feature = "cuda-autotune", feature = "wgpu-autotune"));
    match (fusion, autotune) {
        (true, true) => "fusion + autotune",
        (true, false) => "fusion, no autotune",
        (false, true) => "autotune, no fusion",
        (false, false) => "no fusion, no autotune",
    }
};

impl fmt::Display for WgpuAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WgpuAdapter::Default => write!(f, "wgpu"),
            WgpuAdapter::Cpu => write!(f, "wgpu:cpu"),
            WgpuAdapter::Discrete(n) => write!(f, "wgpu:discrete:{n}"),
            WgpuAdapter::Integrated(n) => write!(f, "wgpu:integrated:{n}"),
            WgpuAdapter::Virtual(n) => write!(f, "wgpu:virtual:{n}"),
        }
    }
}

impl WgpuAdapter {
    /// Parses what follows `wgpu:` (`None`: plain `wgpu`).
    fn parse(whole: &str, rest: Option<&str>) -> Result<Self, ParseDeviceError> {
        let Some(rest) = rest else { return Ok(WgpuAdapter::Default) };
        let (kind, index) = match rest.split_once(':') {
            Some((kind, index)) => (kind, Some(index)),
            None => (rest, None),
        };
        let parse_index = || -> Result<usize, ParseDeviceError> {
            match index {
                None => Ok(0),
                Some(i) => i.trim().parse::<usize>().map_err(|_| {
                    ParseDeviceError(format!(
                        "device `{whole}`: `{i}` is not an adapter index (expected wgpu:{kind}:N with N = 0, 1, ...)"
                    ))
                }),
            }
        };
        match kind.trim() {
            "cpu" if index.is_none() => Ok(WgpuAdapter::Cpu),
            "discrete" => Ok(WgpuAdapter::Discrete(parse_index()?)),
            "integrated" => Ok(WgpuAdapter::Integrated(parse_index()?)),
            "virtual" => Ok(WgpuAdapter::Virtual(parse_index()?)),
            _ => Err(ParseDeviceError(format!(
                "device `{whole}`: unknown wgpu adapter `{rest}` (expected wgpu, wgpu:cpu, wgpu:discrete:N, \
                 wgpu:integrated:N or wgpu:virtual:N)"
            ))),
        }
    }

    /// burn's name for the adapter.
    #[cfg(feature = "wgpu-base")]
    fn burn_device(self) -> burn::backend::wgpu::WgpuDevice {
        use burn::backend::wgpu::WgpuDevice;
        match self {
            WgpuAdapter::Default => WgpuDevice::DefaultDevice,
            WgpuAdapter::Cpu => WgpuDevice::Cpu,
            WgpuAdapter::Discrete(n) => WgpuDevice::DiscreteGpu(n),
            WgpuAdapter::Integrated(n) => WgpuDevice::IntegratedGpu(n),
            WgpuAdapter::Virtual(n) => WgpuDevice::VirtualGpu(n),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::LibTorch => write!(f, "libtorch"),
            DeviceSpec::LibTorchCuda(n) => write!(f, "libtorch-cuda:{n}"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu(adapter) => adapter.fmt(f),
        }
    }
}

/// Why a `--device` string was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDeviceError(String);

impl fmt::Display for ParseDeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseDeviceError {}

impl FromStr for DeviceSpec {
    type Err = ParseDeviceError;

    /// `flex`, `libtorch` (also `libtorch-cpu`), `libtorch-cuda:N`, `cuda:N`, `wgpu[:ADAPTER]`; a
    /// GPU name without `:N` means device 0. Case-insensitive, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let (name, index) = match t.split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (t.as_str(), None),
        };
        let gpu_index = |kind: &str| -> Result<usize, ParseDeviceError> {
            match index {
                None => Ok(0),
                Some(i) => i.trim().parse::<usize>().map_err(|_| {
                    ParseDeviceError(format!(
                        "device `{s}`: `{i}` is not a GPU index (expected {kind}:N with N = 0, 1, ...)"
                    ))
                }),
            }
        };
        let no_index = |spec: DeviceSpec| -> Result<DeviceSpec, ParseDeviceError> {
            match index {
                None => Ok(spec),
                Some(_) => Err(ParseDeviceError(format!("device `{s}`: `{name}` takes no index (use `{spec}`)"))),
            }
        };
        match name {
            "flex" => no_index(DeviceSpec::Flex),
            "libtorch" | "libtorch-cpu" | "tch" => no_index(DeviceSpec::LibTorch),
            "libtorch-cuda" | "tch-cuda" => Ok(DeviceSpec::LibTorchCuda(gpu_index("libtorch-cuda")?)),
            "cuda" => Ok(DeviceSpec::Cuda(gpu_index("cuda")?)),
            "wgpu" => Ok(DeviceSpec::Wgpu(WgpuAdapter::parse(s.trim(), index)?)),
            "" => Err(ParseDeviceError(format!("empty device name (expected {DEVICE_SYNTAX})"))),
            _ => Err(ParseDeviceError(format!("unknown device `{s}` (expected {DEVICE_SYNTAX})"))),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The backend features this binary was compiled with (`flex` is always there).
pub fn compiled_features() -> Vec<&'static str> {
    let mut f = vec!["flex"];
    if cfg!(feature = "tch") {
        f.push("tch");
    }
    if cfg!(feature = "cuda-base") {
        f.push("cuda");
    }
    if cfg!(feature = "wgpu-base") {
        f.push("wgpu");
    }
    f
}

/// Number of CUDA devices LibTorch sees (0 without the `tch` feature, a CUDA-enabled libtorch,
/// a driver or a GPU).
pub fn libtorch_cuda_device_count() -> usize {
    #[cfg(feature = "tch")]
    {
        quietly(|| tch::Cuda::device_count().max(0) as usize).unwrap_or(0)
    }
    #[cfg(not(feature = "tch"))]
    {
        0
    }
}

/// Number of CUDA devices the NVIDIA driver reports to burn's CUDA backend (0 without the `cuda`
/// feature, the driver library `libcuda.so` or a GPU).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda-base")]
    {
        // cudarc loads libcuda lazily and panics when it is missing: ask first, and catch.
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return 0;
        }
        quietly(|| cudarc::driver::CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)).unwrap_or(0)
    }
    #[cfg(not(feature = "cuda-base"))]
    {
        0
    }
}

/// The adapters wgpu sees on the platform's graphics API (the one burn's wgpu backend uses),
/// in wgpu's order (empty without the `wgpu` feature).
pub fn wgpu_adapters() -> Vec<WgpuAdapterInfo> {
    #[cfg(feature = "wgpu-base")]
    {
        use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
        let backend = AutoGraphicsApi::backend();
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        cubecl_common::future::block_on(instance.enumerate_adapters(backend.into()))
            .iter()
            .map(|adapter| {
                let info = adapter.get_info();
                let kind = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => "discrete",
                    wgpu::DeviceType::IntegratedGpu => "integrated",
                    wgpu::DeviceType::VirtualGpu => "virtual",
                    wgpu::DeviceType::Cpu => "cpu",
                    wgpu::DeviceType::Other => "other",
                };
                WgpuAdapterInfo { kind, name: info.name, driver: format!("{} {}", info.driver, info.driver_info) }
            })
            .collect()
    }
    #[cfg(not(feature = "wgpu-base"))]
    {
        Vec::new()
    }
}

/// One adapter as wgpu reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgpuAdapterInfo {
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    pub kind: &'static str,
    pub name: String,
    pub driver: String,
}

impl WgpuAdapterInfo {
    /// The `--device` that names this adapter, given its place among the adapters of its kind.
    fn device(&self, index_of_kind: usize) -> Option<DeviceSpec> {
        let adapter = match self.kind {
            "discrete" => WgpuAdapter::Discrete(index_of_kind),
            "integrated" => WgpuAdapter::Integrated(index_of_kind),
            "virtual" => WgpuAdapter::Virtual(index_of_kind),
            "cpu" if index_of_kind == 0 => WgpuAdapter::Cpu,
            _ => return None,
        };
        Some(DeviceSpec::Wgpu(adapter))
    }
}

/// The wgpu devices this machine has: `wgpu` (when there is any adapter), then one per adapter
/// in the form that names it.
fn wgpu_devices(adapters: &[WgpuAdapterInfo]) -> Vec<DeviceSpec> {
    let mut v = Vec::new();
    if !adapters.is_empty() {
        v.push(DeviceSpec::Wgpu(WgpuAdapter::Default));
    }
    let mut seen: Vec<&str> = Vec::new();
    for a in adapters {
        let index = seen.iter().filter(|&&k| k == a.kind).count();
        seen.push(a.kind);
        v.extend(a.device(index));
    }
    v
}

/// Runs `f`, turning a panic into `None` without printing it (for probing native libraries and
/// CubeCL's set-once configuration).
#[allow(dead_code)]
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f).ok();
    std::panic::set_hook(hook);
    r
}

/// Every device this binary can run on, on this machine: `flex`, then (feature `tch`)
/// `libtorch` and `libtorch-cuda:N` for each GPU LibTorch sees, then (feature `cuda`) `cuda:N`
/// for each GPU the driver reports, then (feature `wgpu`) `wgpu` and each adapter wgpu sees.
pub fn available() -> Vec<DeviceSpec> {
    let mut v = vec![DeviceSpec::Flex];
    if cfg!(feature = "tch") {
        v.push(DeviceSpec::LibTorch);
        v.extend((0..libtorch_cuda_device_count()).map(DeviceSpec::LibTorchCuda));
    }
    if cfg!(feature = "cuda-base") {
        v.extend((0..cuda_device_count()).map(DeviceSpec::Cuda));
    }
    if cfg!(feature = "wgpu-base") {
        v.extend(wgpu_devices(&wgpu_adapters()));
    }
    v
}

/// One line naming the compiled features and the available devices, for errors and `--help`.
pub fn describe_available() -> String {
    let devices: Vec<String> = available().iter().map(|d| d.to_string()).collect();
    let features: Vec<String> = compiled_features()
        .iter()
        .map(|&f| if f == "cuda" || f == "wgpu" { format!("{f} ({CUBECL_KERNELS})") } else { f.to_string() })
        .collect();
    format!("this binary has the backend features [{}] and the devices [{}]", features.join(", "), devices.join(", "))
}

/// Fails unless `spec` can be used by this binary on this machine; the error names the missing
/// feature or GPU and what the binary has.
pub fn check(spec: &DeviceSpec) -> anyhow::Result<()> {
    if let Some(feature) = spec.feature() {
        if !compiled_features().contains(&feature) {
            bail!(
                "device `{spec}` needs the Cargo feature `{feature}`, which this binary was not built with \
                 (rebuild with `--features {feature}`; README, section \"Backends and devices\"); {}",
                describe_available()
            );
        }
    }
    let missing_gpu = match *spec {
        DeviceSpec::LibTorchCuda(n) => {
            let count = libtorch_cuda_device_count();
            (n >= count).then(|| format!("LibTorch sees {count} CUDA device(s)"))
        }
        DeviceSpec::Cuda(n) => {
            let count = cuda_device_count();
            (n >= count).then(|| format!("the NVIDIA driver reports {count} CUDA device(s)"))
        }
        DeviceSpec::Wgpu(adapter) => {
            let adapters = wgpu_adapters();
            // `wgpu` takes whatever there is; a named adapter must be among those listed.
            let present = match adapter {
                WgpuAdapter::Default => !adapters.is_empty(),
                _ => wgpu_devices(&adapters).contains(spec),
            };
            (!present).then(|| {
                let seen: Vec<String> =
                    adapters.iter().map(|a| format!("{} ({}, {})", a.name, a.kind, a.driver)).collect();
                format!(
                    "wgpu sees {} adapter(s){}{}",
                    adapters.len(),
                    if seen.is_empty() { String::new() } else { format!(": {}", seen.join("; ")) },
                    if adapters.is_empty() {
                        " (no Vulkan, Metal or DirectX 12 driver; on Linux without a GPU, Mesa's lavapipe: \
                         apt-get install mesa-vulkan-drivers)"
                    } else {
                        ""
                    }
                )
            })
        }
        _ => None,
    };
    if let Some(why) = missing_gpu {
        bail!("device `{spec}` is not available: {why}; {}", describe_available());
    }
    Ok(())
}

/// CPU thread counts for the backends (`--threads`). LibTorch's intra-op threads (and OpenMP's,
/// which LibTorch sets with them) follow `intra_op`; its inter-op pool gets `inter_op`. Flex, as
/// this project builds it (without burn-flex's `rayon` feature), runs each op on the calling
/// thread; its PPO learner reads `intra_op` as its own thread count
/// ([`DeviceArgs::learner_threads`]). The CUDA backend has no CPU pools.
///
/// Without explicit counts LibTorch starts one thread per core for each pool, which next to the
/// environment worker threads oversubscribes a small machine; so [`run_on`] always sets them,
/// by default to the available parallelism (intra-op) and 1 (inter-op).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Threads {
    pub intra_op: Option<usize>,
    pub inter_op: Option<usize>,
}

impl Threads {
    /// `n` intra-op threads (0 or `None`: the default).
    pub fn new(n: Option<usize>) -> Self {
        Threads { intra_op: n.filter(|&n| n > 0), inter_op: None }
    }

    /// The counts that will be applied: defaults filled in.
    pub fn resolved(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (self.intra_op.unwrap_or(cores), self.inter_op.unwrap_or(1))
    }

    /// Applies the counts to the libraries compiled in. LibTorch accepts its inter-op count only
    /// once per process (before any parallel work), so later calls leave that count alone.
    pub fn apply(&self) {
        #[cfg(feature = "tch")]
        {
            use std::sync::Once;
            static INTER_OP: Once = Once::new();
            let (intra, inter) = self.resolved();
            tch::set_num_threads(intra as i32);
            INTER_OP.call_once(|| {
                let _ = quietly(|| tch::set_num_interop_threads(inter as i32));
            });
        }
    }
}

/// What every binary takes to choose where it runs: `--device`, `--threads`, and for CubeCL's
/// devices (`cuda:N`, `wgpu...`) the kernel log and cache. Flattened into each binary's arguments so that the flags, their
/// help and their checks live here once.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct DeviceArgs {
    /// Backend and device: flex | libtorch | libtorch-cuda:N | cuda:N | wgpu[:cpu|:discrete:N|...]
    /// (an unavailable one fails at start, naming what this binary has).
    #[arg(long, default_value = "flex")]
    pub device: DeviceSpec,
    /// CPU threads: LibTorch's intra-op pool (and OpenMP's); on flex, the PPO learner's
    /// threads (each minibatch's loss split by rows); default: all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// cuda:N and wgpu only: log every kernel compilation and autotune result to this file, each
    /// line stamped with the seconds since the start (where a slow warm-up spends its time).
    #[arg(long)]
    pub kernel_log: Option<PathBuf>,
    /// cuda:N and wgpu only: keep compiled kernels and autotune results in this directory
    /// (CubeCL's caches), for later runs on the same device to load instead of redoing; default
    /// `$XDG_CACHE_HOME/m3ixup/cubecl/<build>` (`~/.cache/...`), or `$M3IXUP_KERNEL_CACHE`.
    #[arg(long)]
    pub kernel_cache: Option<PathBuf>,
}

impl DeviceArgs {
    /// Fails unless the device is usable here (see [`check`]) and the kernel options fit it.
    pub fn check(&self) -> anyhow::Result<()> {
        check(&self.device)?;
        if !self.device.is_cubecl() {
            for (flag, given) in [("--kernel-log", &self.kernel_log), ("--kernel-cache", &self.kernel_cache)] {
                if given.is_some() {
                    bail!(
                        "{flag} applies to cuda:N and wgpu devices only (burn's CubeCL backends compile their \
                         kernels at run time); device `{}` does not",
                        self.device
                    );
                }
            }
        }
        Ok(())
    }

    /// Threads of the PPO learner (`TrainOptions::learner_threads`): `--threads` (default all
    /// cores) on flex, which computes each op on the calling thread; 1 elsewhere, where the
    /// backend has its own pool (LibTorch) or device.
    pub fn learner_threads(&self) -> usize {
        match self.device {
            DeviceSpec::Flex => Threads::new(self.threads).resolved().0,
            _ => 1,
        }
    }

    /// Runs `job` on the device with these thread counts and kernel options.
    pub fn run<J: BackendJob>(&self, job: J) -> anyhow::Result<J::Output> {
        self.check()?;
        if self.device.is_cubecl() {
            let cache = self.kernel_cache.clone().or_else(default_kernel_cache);
            configure_cubecl_kernels(self.kernel_log.as_deref(), cache.as_deref())?;
        }
        dispatch(&self.device, Threads::new(self.threads), job)
    }
}

/// Where CubeCL keeps compiled kernels and autotune results when `--kernel-cache` is not given:
/// `$M3IXUP_KERNEL_CACHE`, else `cubecl/<build>` under `$XDG_CACHE_HOME/m3ixup` (`~/.cache/m3ixup`).
///
/// Persistent by default because the warm-up is autotuning: on the first PPO update every
/// matmul, reduction and convolution shape benchmarks its candidate kernels (README, "GPU
/// figures"), and a later run with the results at hand skips all of it. `<build>` separates the
/// fusion/autotune builds, whose kernels differ; below it CubeCL keys the entries by device
/// (runtime, device kind and index) and checks each against a checksum of the kernels it tunes,
/// so results of another burn version or kernel set are redone, not misused. Without a home
/// directory, `None` (CubeCL's own default then applies).
pub fn default_kernel_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("M3IXUP_KERNEL_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("m3ixup")
            .join("cubecl")
            .join(CUBECL_KERNELS.replace(" + ", "-").replace(", ", "-").replace(' ', "-")),
    )
}

/// A `log` sink for CubeCL's kernel log (`--kernel-log`): each record one line, stamped with the
/// seconds since the sink was made, written through at once so that a run stopped mid-warm-up
/// still shows what it was compiling.
pub struct KernelLog {
    start: std::time::Instant,
    file: std::sync::Mutex<std::io::LineWriter<std::fs::File>>,
}

impl KernelLog {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--kernel-log {}: cannot create the file: {e}", path.display()))?;
        Ok(KernelLog { start: std::time::Instant::now(), file: std::sync::Mutex::new(std::io::LineWriter::new(file)) })
    }
}

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        use std::io::Write;
        let seconds = self.start.elapsed().as_secs_f64();
        if let Ok(mut file) = self.file.lock() {
            // Multi-line messages (autotune tables) keep the stamp on their first line only.
            let _ = writeln!(file, "{seconds:10.3}s {}", record.args());
        }
    }

    fn flush(&self) {
        use std::io::Write;
        if let Ok(mut file) = self.file.lock() {
            let _ = file.flush();
        }
    }
}

/// Sets CubeCL's runtime configuration (`cuda:N`, `wgpu`) from `--kernel-log` and `--kernel-cache`,
/// on top of what CubeCL itself reads (a `cubecl.toml` in the working directory or above, and
/// the `CUBECL_*` environment variables, e.g. `CUBECL_AUTOTUNE_LEVEL`). CubeCL takes its
/// configuration once per process, before its first kernel; a second call with the same
/// options is a no-op, one with other options an error.
#[allow(unused_variables)]
fn configure_cubecl_kernels(kernel_log: Option<&Path>, kernel_cache: Option<&Path>) -> anyhow::Result<()> {
    #[cfg(any(feature = "cuda-base", feature = "wgpu-base"))]
    {
        use cubecl_common::config::logger::LogCrateLevel;
        use cubecl_runtime::config::autotune::AutotuneLogLevel;
        use cubecl_runtime::config::cache::CacheConfig;
        use cubecl_runtime::config::compilation::CompilationLogLevel;
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};
        use std::sync::OnceLock;

        static APPLIED: OnceLock<(Option<PathBuf>, Option<PathBuf>)> = OnceLock::new();
        let wanted = (kernel_log.map(Path::to_path_buf), kernel_cache.map(Path::to_path_buf));
        if let Some(applied) = APPLIED.get() {
            if *applied != wanted {
                bail!("the CubeCL kernel options can be set once per process (already {applied:?}, now {wanted:?})");
            }
            return Ok(());
        }
        if wanted == (None, None) {
            return Ok(());
        }
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if let Some(path) = kernel_log {
            log::set_boxed_logger(Box::new(KernelLog::create(path)?))
                .map_err(|_| anyhow::anyhow!("--kernel-log: another logger is already installed in this process"))?;
            log::set_max_level(log::LevelFilter::Info);
            config.compilation.logger.level = CompilationLogLevel::Basic;
            config.compilation.logger.log = Some(LogCrateLevel::Info);
            config.autotune.logger.level = AutotuneLogLevel::Full;
            config.autotune.logger.log = Some(LogCrateLevel::Info);
        }
        if let Some(dir) = kernel_cache {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("--kernel-cache {}: cannot create the directory: {e}", dir.display()))?;
            config.compilation.cache = Some(CacheConfig::File(dir.to_path_buf()));
            config.autotune.cache = CacheConfig::File(dir.to_path_buf());
        }
        let set = quietly(move || CubeClRuntimeConfig::set(config));
        anyhow::ensure!(set.is_some(), "CubeCL was configured before --kernel-log / --kernel-cache could be applied");
        let _ = APPLIED.set(wanted);
    }
    Ok(())
}

/// Work that is generic over the autodiff backend: [`run_on`] calls [`BackendJob::run`] with
/// the backend and device that a [`DeviceSpec`] names.
///
/// ```ignore
/// struct Pretrain<'a> { config: &'a PretrainConfig, run: &'a RunDir }
/// impl BackendJob for Pretrain<'_> {
///     type Output = PretrainSummary;
///     fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
///         Ok(pretrain::<B>(self.config, self.run, &device, &PretrainOptions::default())?.1)
///     }
/// }
/// let summary = run_on(&"libtorch".parse()?, Pretrain { config: &config, run: &run })?;
/// ```
pub trait BackendJob {
    type Output;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Checks `spec` (see [`check`]), applies the default [`Threads`], and runs `job` on it.
pub fn run_on<J: BackendJob>(spec: &DeviceSpec, job: J) -> anyhow::Result<J::Output> {
    DeviceArgs { device: *spec, ..DeviceArgs::default() }.run(job)
}

/// Applies `threads` and runs `job` on the backend `spec` names; callers have checked `spec`.
fn dispatch<J: BackendJob>(spec: &DeviceSpec, threads: Threads, job: J) -> anyhow::Result<J::Output> {
    threads.apply();
    match *spec {
        DeviceSpec::Flex => job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default()),
        #[cfg(feature = "tch")]
        DeviceSpec::LibTorch => {
            job.run::<burn::backend::Autodiff<burn::backend::LibTorch>>(burn::backend::libtorch::LibTorchDevice::Cpu)
        }
        #[cfg(feature = "tch")]
        DeviceSpec::LibTorchCuda(n) => job
            .run::<burn::backend::Autodiff<burn::backend::LibTorch>>(burn::backend::libtorch::LibTorchDevice::Cuda(n)),
        #[cfg(feature = "cuda-base")]
        DeviceSpec::Cuda(n) => {
            job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::new(n))
        }
        #[cfg(feature = "wgpu-base")]
        DeviceSpec::Wgpu(adapter) => job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(adapter.burn_device()),
        // Unreachable: `check` rejects devices whose feature is not compiled in.
        #[allow(unreachable_patterns)]
        _ => bail!("device `{spec}` is not compiled in; {}", describe_available()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, d) in [
            ("flex", DeviceSpec::Flex),
            ("libtorch", DeviceSpec::LibTorch),
            ("LibTorch-CPU", DeviceSpec::LibTorch),
            ("libtorch-cuda:1", DeviceSpec::LibTorchCuda(1)),
            ("libtorch-cuda", DeviceSpec::LibTorchCuda(0)),
            (" cuda:0 ", DeviceSpec::Cuda(0)),
            ("cuda", DeviceSpec::Cuda(0)),
            ("wgpu", DeviceSpec::Wgpu(WgpuAdapter::Default)),
            ("WGPU:CPU", DeviceSpec::Wgpu(WgpuAdapter::Cpu)),
            ("wgpu:discrete:1", DeviceSpec::Wgpu(WgpuAdapter::Discrete(1))),
            ("wgpu:integrated", DeviceSpec::Wgpu(WgpuAdapter::Integrated(0))),
            ("wgpu:virtual:2", DeviceSpec::Wgpu(WgpuAdapter::Virtual(2))),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d, "{s}");
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
    }

    #[test]
    fn parse_errors_say_what_is_accepted() {
        for s in ["gpu", "", "cuda:x", "cuda:-1", "flex:0", "libtorch:1", "wgpu:gpu", "wgpu:cpu:1", "wgpu:discrete:x"] {
            let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("device") || e.contains("expected"), "{s}: {e}");
        }
        assert!("gpu".parse::<DeviceSpec>().unwrap_err().to_string().contains(DEVICE_SYNTAX));
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().to_string().contains("not a GPU index"));
        assert!("flex:0".parse::<DeviceSpec>().unwrap_err().to_string().contains("takes no index"));
        assert!("wgpu:gpu".parse::<DeviceSpec>().unwrap_err().to_string().contains("wgpu:discrete:N"));
        assert!("wgpu:discrete:x".parse::<DeviceSpec>().unwrap_err().to_string().contains("not an adapter index"));
    }

    #[test]
    fn wgpu_devices_name_each_adapter_by_kind_and_index() {
        let adapter = |kind, name: &str| WgpuAdapterInfo { kind, name: name.into(), driver: String::new() };
        assert!(wgpu_devices(&[]).is_empty(), "no adapter, no wgpu device");
        let devices = wgpu_devices(&[
            adapter("discrete", "a"),
            adapter("cpu", "llvmpipe"),
            adapter("discrete", "b"),
            adapter("integrated", "c"),
            adapter("other", "d"),
        ]);
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        assert_eq!(names, ["wgpu", "wgpu:discrete:0", "wgpu:cpu", "wgpu:discrete:1", "wgpu:integrated:0"]);
    }

    #[test]
    fn flex_is_always_available() {
        assert_eq!(available()[0], DeviceSpec::Flex);
        check(&DeviceSpec::Flex).unwrap();
    }

    #[test]
    fn missing_feature_or_gpu_is_an_error_naming_what_there_is() {
        // A GPU index no machine has: fails with or without the feature.
        for spec in [DeviceSpec::Cuda(999), DeviceSpec::LibTorchCuda(999), DeviceSpec::Wgpu(WgpuAdapter::Virtual(999))]
        {
            let e = check(&spec).unwrap_err().to_string();
            assert!(e.contains("this binary has the backend features [flex"), "{e}");
            assert!(e.contains("devices [flex"), "{e}");
            let feature = spec.feature().unwrap();
            if compiled_features().contains(&feature) {
                assert!(e.contains("not available"), "{e}");
            } else {
                assert!(e.contains(&format!("needs the Cargo feature `{feature}`")), "{e}");
            }
        }
        if !cfg!(feature = "tch") {
            let e = check(&DeviceSpec::LibTorch).unwrap_err().to_string();
            assert!(e.contains("`tch`"), "{e}");
        }
    }

    #[test]
    fn device_args_parse_as_flattened_flags() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            device: DeviceArgs,
        }
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "bin",
            "--device",
            "cuda:1",
            "--threads",
            "2",
            "--kernel-log",
            "k.log",
            "--kernel-cache",
            "kc",
        ])
        .unwrap();
        assert_eq!(
            cli.device,
            DeviceArgs {
                device: DeviceSpec::Cuda(1),
                threads: Some(2),
                kernel_log: Some("k.log".into()),
                kernel_cache: Some("kc".into()),
            }
        );
        assert_eq!(Cli::try_parse_from(["bin"]).unwrap().device, DeviceArgs::default());
    }

    #[test]
    fn kernel_options_are_refused_off_cuda() {
        for (log, cache, flag) in [(Some("k.log"), None, "--kernel-log"), (None, Some("kc"), "--kernel-cache")] {
            let args = DeviceArgs {
                device: DeviceSpec::Flex,
                kernel_log: log.map(PathBuf::from),
                kernel_cache: cache.map(PathBuf::from),
                ..Default::default()
            };
            let e = args.check().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{flag} applies to cuda:N and wgpu devices only")) && e.contains("`flex`"),
                "{e}"
            );
        }
        DeviceArgs::default().check().unwrap();
    }

    #[test]
    fn kernel_log_stamps_each_line_with_the_seconds_since_start() {
        use log::Log;
        let path = std::env::temp_dir().join(format!("m3ixup-kernel-log-{}.log", std::process::id()));
        let sink = KernelLog::create(&path).unwrap();
        let record = |level, args| log::Record::builder().level(level).args(args).build();
        sink.log(&record(log::Level::Info, format_args!("[Compiling kernel] matmul")));
        sink.log(&record(log::Level::Debug, format_args!("left out: below info")));
        sink.log(&record(log::Level::Info, format_args!("autotune: fastest simple")));
        // Written through without a flush: a run stopped mid-warm-up keeps its log.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (line, msg) in lines.iter().zip(["[Compiling kernel] matmul", "autotune: fastest simple"]) {
            let (stamp, rest) = line.trim_start().split_once("s ").unwrap();
            let seconds: f64 = stamp.parse().unwrap();
            assert!((0.0..60.0).contains(&seconds), "{line}");
            assert_eq!(rest, msg);
        }
        let _ = std::fs::remove_file(&path);
    }

    /// The CubeCL configuration that `--kernel-log` / `--kernel-cache` set, end to end through
    /// CubeCL's own logger (no GPU needed: configuration and logging only). Runs in builds with
    /// a CubeCL feature: `cargo test --features wgpu-base --lib device`.
    #[cfg(any(feature = "cuda-base", feature = "wgpu-base"))]
    #[test]
    fn kernel_options_configure_cubecl_once() {
        use cubecl_runtime::config::cache::CacheConfig;
        use cubecl_runtime::config::{CubeClRuntimeConfig, Logger, RuntimeConfig};
        let dir = std::env::temp_dir().join(format!("m3ixup-kernel-options-{}", std::process::id()));
        let (log, cache) = (dir.join("kernels.log"), dir.join("cache"));
        std::fs::create_dir_all(&dir).unwrap();
        configure_cubecl_kernels(Some(&log), Some(&cache)).unwrap();
        configure_cubecl_kernels(Some(&log), Some(&cache)).expect("the same options again are a no-op");
        let e = configure_cubecl_kernels(None, Some(&cache)).unwrap_err().to_string();
        assert!(e.contains("once per process"), "{e}");

        let config = CubeClRuntimeConfig::get();
        assert!(cache.is_dir());
        assert!(matches!(&config.compilation.cache, Some(CacheConfig::File(p)) if *p == cache));
        assert!(matches!(&config.autotune.cache, CacheConfig::File(p) if *p == cache));
        let mut logger = Logger::new();
        logger.log_compilation(&"[Compiling kernel] probe");
        logger.log_autotune(&"autotune probe");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("s [Compiling kernel] probe") && text.contains("s autotune probe"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernel_cache_defaults_to_the_users_cache_directory_per_build() {
        if std::env::var_os("M3IXUP_KERNEL_CACHE").is_some() || std::env::var_os("HOME").is_none() {
            return; // the environment chose another place
        }
        let dir = default_kernel_cache().expect("a home directory gives a default");
        let flavour = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            ["fusion-autotune", "fusion-no-autotune", "autotune-no-fusion", "no-fusion-no-autotune"]
                .contains(&flavour.as_str()),
            "{flavour}"
        );
        assert!(dir.parent().unwrap().ends_with("m3ixup/cubecl"), "{}", dir.display());
    }

    #[test]
    fn run_on_flex_runs_the_job_generically() {
        struct Sum;
        impl BackendJob for Sum {
            type Output = f32;
            fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<f32> {
                let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
                Ok(t.sum().into_scalar().elem())
            }
        }
        use burn::tensor::ElementConversion;
        assert_eq!(run_on(&DeviceSpec::Flex, Sum).unwrap(), 6.0);
    }
}
