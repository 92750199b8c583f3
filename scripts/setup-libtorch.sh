#!/usr/bin/env bash
# Prepares LibTorch for the `tch` feature (README, section "Backends and devices"): a virtual
# environment with PyPI's torch==2.9.0 (the version burn-tch 0.21 / tch 0.22 are built for),
# and prints the environment the build needs, as `export` lines:
#
#     eval "$(scripts/setup-libtorch.sh)"
#     cargo build --release --features tch
#
# The venv is <repo>/.venv-torch (gitignored), or $M3IXUP_TORCH_VENV. An existing venv with
# torch 2.9.0 is reused. PyPI has no CPU-only 2.9.0 wheel: the CUDA build also runs on CPU, but
# its libtorch links the CUDA runtime libraries (cudart, cuBLAS, cuDNN, NCCL, ...), which come
# as the nvidia-* wheels torch depends on, so they are installed too (about 3 GB, measured in the
# README); `--no-deps` leaves libtorch unloadable (libcudart.so.12 not found, even for CPU use).
#
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${M3IXUP_TORCH_VENV:-$repo/.venv-torch}"
torch_version="2.9.0"

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
