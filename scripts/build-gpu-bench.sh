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
