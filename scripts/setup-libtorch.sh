#!/usr/bin/env bash
# Prepares LibTorch for the `tch` feature (README, section "Backends and devices"): a virtual
# environment with PyPI's torch (by default 2.9.0, the version burn-tch 0.21 / tch 0.22 are
# built for, and the one CI tests), and prints the environment the build needs, as `export`
# lines:
#
#     eval "$(scripts/setup-libtorch.sh [--torch-version 2.11.0])"
#     cargo build --release --features tch
#
# --torch-version X: another torch. tch 0.22 checks that libtorch is 2.9.0; for any other
#   version this script also exports LIBTORCH_BYPASS_VERSION_CHECK=1. Verified (the `tch`
#   tests pass, README): 2.9.0 and 2.11.0. Other versions are refused unless
#   M3IXUP_TORCH_UNVERIFIED=1 (then: at your own risk; run `cargo test --features tch --test
#   backends` to check).
#
# The venv is <repo>/.venv-torch-X (gitignored), or $M3IXUP_TORCH_VENV. An existing venv with
# that torch is reused. PyPI has no CPU-only wheel: the CUDA build also runs on CPU, but
# its libtorch links the CUDA runtime libraries (cudart, cuBLAS, cuDNN, NCCL, ...), which come
# as the nvidia-* wheels torch depends on, so they are installed too (about 3 GB, measured in the
# README); `--no-deps` leaves libtorch unloadable (libcudart.so.12 not found, even for CPU use).
#
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
default_version="2.9.0"
verified_versions="2.9.0 2.11.0"
torch_version="$default_version"
while [ $# -gt 0 ]; do
    case "$1" in
        --torch-version) torch_version="${2:?--torch-version needs a version, e.g. 2.11.0}"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" >&2; exit 0 ;;
        *) echo "setup-libtorch: unknown argument \`$1\` (expected --torch-version X)" >&2; exit 2 ;;
    esac
done
case " $verified_versions " in
    *" $torch_version "*) ;;
    *)
        if [ "${M3IXUP_TORCH_UNVERIFIED:-0}" != 1 ]; then
            echo "setup-libtorch: torch $torch_version is not a verified version (verified: $verified_versions);" \
                "set M3IXUP_TORCH_UNVERIFIED=1 to try it anyway" >&2
            exit 2
        fi
        echo "setup-libtorch: torch $torch_version is unverified; check it with cargo test --features tch --test backends" >&2 ;;
esac
venv="${M3IXUP_TORCH_VENV:-$repo/.venv-torch-$torch_version}"

have_torch() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$torch_version" <<'PY' 2>/dev/null
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

if have_torch; then
    echo "setup-libtorch: reusing $venv (torch $torch_version)" >&2
else
    echo "setup-libtorch: installing torch==$torch_version into $venv" >&2
    start=$(date +%s)
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$torch_version" numpy >&2
    echo "setup-libtorch: installed in $(( $(date +%s) - start )) s" >&2
    have_torch || { echo "setup-libtorch: torch does not import from $venv" >&2; exit 1; }
fi

lib="$("$venv/bin/python" -c 'from torch.utils import cpp_extension; print(cpp_extension.library_paths()[0])')"
echo "setup-libtorch: libtorch in $lib" >&2
# torch-sys and burn-tch ask the `python` of VIRTUAL_ENV (python3 without one) where libtorch is.
echo "export VIRTUAL_ENV='$venv'"
echo "export PATH='$venv/bin':\"\$PATH\""
echo "export LIBTORCH_USE_PYTORCH=1"
echo "unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE"
# tch 0.22's build script refuses any libtorch but 2.9.0 unless told to skip the check.
if [ "$torch_version" = "$default_version" ]; then
    echo "unset LIBTORCH_BYPASS_VERSION_CHECK"
else
    echo "export LIBTORCH_BYPASS_VERSION_CHECK=1"
fi
