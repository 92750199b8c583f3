#!/usr/bin/env bash
# Builds the `train` binaries that bench/gpu.sh and bench/gpu-libtorch.sh run on a GPU machine
# (where there is no cargo), one per build, into gpu-bench/ (gitignored): stripped and
# gzip-compressed, so that two of them fit in what a GPU session can carry (the scripts unpack
# them).
#
#   scripts/build-gpu-bench.sh [--cuda-version 13000] [--features "cuda-base cuda"] [--out gpu-bench]
#   scripts/build-gpu-bench.sh --features tch --torch-version 2.11.0
#
# --cuda-version: the CUDA driver API the binaries bind to (CUDARC_CUDA_VERSION): 12040 (the
#   default in .cargo/config.toml, drivers >= 550), 12080 (>= 570) or 13000 (CUDA 13, >= 580).
# --features: which builds, each one Cargo feature: cuda (fusion + autotune), cuda-base
#   (neither), cuda-fusion, cuda-autotune, or tch (LibTorch). Each lands as
#   gpu-bench/train-<feature>.gz.
# --torch-version: for tch, the torch the GPU machine has (scripts/setup-libtorch.sh installs
#   the same one here to build against; default 2.9.0). The tch build goes to its own target
#   directory, target/libtorch-<version>, so that it does not undo the other builds.
#
# The CUDA builds also leave gpu-bench/cuda-include-<major>.tar.gz: the CUDA headers that CubeCL's
# run-time kernel compiler (NVRTC) includes (cuda_runtime.h, cuda_fp16.h, ... and CCCL's
# <cuda/barrier>, <cuda/pipeline>, <nv/target>), from NVIDIA's PyPI wheels. A machine with only a
# pip torch has NVRTC (a torch dependency) but not CCCL; bench/gpu.sh unpacks the bundle there
# when it finds no CUDA toolkit.
#
# Cargo hashes the features into each artifact in target/, so one build does not undo another:
# the first build of each feature set compiles burn's CUDA crates (14 min for two, 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

cuda_version="${CUDARC_CUDA_VERSION:-12040}" features="cuda-base cuda" out="gpu-bench" torch_version="2.9.0"
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda-version) cuda_version="$2"; shift 2 ;;
        --features) features="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --torch-version) torch_version="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$cuda_version" in
    12040|12080|13000) ;;
    *) echo "--cuda-version $cuda_version: expected 12040, 12080 or 13000" >&2; exit 2 ;;
esac

mkdir -p "$out"

# cuda_headers MAJOR: the header bundle for CUDA MAJOR (the wheels' include folders, merged).
cuda_headers() {
    local major="$1" tmp wheels
    case "$major" in
        13) wheels=("nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*") ;;
        12) wheels=("nvidia-cuda-runtime-cu12==12.8.*" "nvidia-cuda-cccl-cu12==12.8.*") ;;
    esac
    tmp="$(mktemp -d)"
    echo "== CUDA $major headers from PyPI: ${wheels[*]}"
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/wheels" "${wheels[@]}"
    mkdir -p "$tmp/cuda/include"
    for w in "$tmp"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$tmp/unpacked"
    done
    # cu13 wheels: nvidia/cu13/include (CCCL under include/cccl, as CubeCL expects);
    # cu12 wheels: nvidia/<package>/include.
    for inc in $(find "$tmp/unpacked/nvidia" -maxdepth 2 -type d -name include); do
        cp -r "$inc/." "$tmp/cuda/include/"
    done
    [ -f "$tmp/cuda/include/cuda_runtime.h" ] || { echo "CUDA $major headers: no cuda_runtime.h in ${wheels[*]}" >&2; exit 1; }
    tar -C "$tmp" -czf "$out/.cuda-include-$major.tar.gz.tmp" cuda
    mv "$out/.cuda-include-$major.tar.gz.tmp" "$out/cuda-include-$major.tar.gz"
    rm -rf "$tmp"
    ls -l "$out/cuda-include-$major.tar.gz"
}
case " $features " in
    *" cuda"*) cuda_headers "${cuda_version:0:2}" ;;
esac

for feature in $features; do
    target="target"
    case "$feature" in
        cuda|cuda-base|cuda-fusion|cuda-autotune)
            echo "== train, --features $feature, CUDARC_CUDA_VERSION=$cuda_version"
            CUDARC_CUDA_VERSION="$cuda_version" cargo build --release --quiet --features "$feature" --bin train ;;
        tch)
            target="target/libtorch-$torch_version"
            echo "== train, --features tch, against torch $torch_version ($target)"
            (
                eval "$(scripts/setup-libtorch.sh --torch-version "$torch_version")"
                CARGO_TARGET_DIR="$target" cargo build --release --quiet --features tch --bin train
            ) ;;
        *) echo "--features: \`$feature\` is not a GPU build (expected cuda, cuda-base, cuda-fusion, cuda-autotune or tch)" >&2; exit 2 ;;
    esac
    tmp="$out/.train-$feature.gz.tmp"
    strip -o "$out/.train-$feature" "$target/release/train"
    gzip -9c "$out/.train-$feature" > "$tmp"
    rm "$out/.train-$feature"
    mv "$tmp" "$out/train-$feature.gz"
    ls -l "$out/train-$feature.gz"
done
cat > "$out/BUILD.txt" <<EOF
built $(date -u +%Y-%m-%dT%H:%MZ) from $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')
CUDARC_CUDA_VERSION=$cuda_version; torch (tch) $torch_version; features: $features
EOF
echo "in $out/: $(ls "$out" | tr '\n' ' ')"
