#!/usr/bin/env bash
# Make a Python environment that can run python/tests and bench/resnet18_cifar.py on the CPU:
# torch from PyPI plus pytest, numpy and matplotlib, in a virtual environment at $FNGD_VENV
# (default ~/.cache/fngd/venv, reused while it works). Prints the environment's python path last.
#
# PyPI's Linux torch wheel is a CUDA build whose default dependencies are ~5 GB of nvidia-*
# wheels and triton. `pip install --no-deps torch` alone does not import (libtorch_cuda.so
# needs libcufile, libcusparseLt, libnvshmem_host and a recent libnccl at load time, even on a
# CPU), so the cheap path installs torch without dependencies plus exactly those four wheels
# (~0.5 GB) and lets the CUDA toolkit of this machine kind (/usr/local/cuda/lib64 in the loader
# path) provide cuBLAS, cuDNN and the rest. If that environment does not import and run a
# backward pass, it falls back to the full default install, which always works.
# Measured on this machine kind (PyPI reachable, other jobs running): cheap path 53-99 s and
# ~1.5 GB; full install (FNGD_TORCH_FULL=1 forces it) 64-124 s and 5.5 GB.
set -euo pipefail

VENV="${FNGD_VENV:-$HOME/.cache/fngd/venv}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${FNGD_TORCH_VERSION:-2.15.0}"
# The load-time libraries torch 2.15.0 does not find in the CUDA 13 toolkit (pinned to the
# versions that torch release requires).
CHEAP_EXTRAS=(nvidia-cufile==1.17.1.22 nvidia-cusparselt-cu13==0.8.1 nvidia-nvshmem-cu13==3.7.2
              nvidia-nccl-cu13==2.30.7)
PURE_DEPS=(filelock "typing-extensions>=4.13" "sympy>=1.13.3" "networkx>=2.5.1" jinja2
           "fsspec>=0.8.5")
TOOLS=(pytest numpy matplotlib)

works() {
  "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import torch, pytest, numpy, matplotlib
x = torch.randn(2, 3, 5, 5, requires_grad=True)
torch.nn.functional.conv2d(x, torch.randn(4, 3, 3, 3)).sum().backward()
assert x.grad is not None
EOF
}

if [ -x "$VENV/bin/python" ] && works; then
  echo "python_setup: $VENV already works"
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "$@"; }

if [ "$TORCH_VERSION" = "2.15.0" ] && [ "${FNGD_TORCH_FULL:-0}" != "1" ]; then
  echo "python_setup: torch $TORCH_VERSION without its CUDA dependencies (cheap path)"
  pip_install --no-deps "torch==$TORCH_VERSION" "${CHEAP_EXTRAS[@]}"
  pip_install "${PURE_DEPS[@]}" "${TOOLS[@]}"
fi
if ! works; then
  echo "python_setup: full torch $TORCH_VERSION install (with its default dependencies)"
  pip_install "torch==$TORCH_VERSION" "${TOOLS[@]}"
  if ! works; then
    echo "python_setup: torch still does not import in $VENV" >&2
    "$VENV/bin/python" -c "import torch" || true
    exit 1
  fi
fi
# ASDL (optional: the benchmark's KFAC and SMW rows). Its declared dependency is torch, already
# here; --no-deps keeps pip from pulling torch's CUDA wheels again (~2 s instead of ~4 GB).
pip_install --no-deps asdfghjkl || echo "python_setup: asdfghjkl not installed (optional)"
# SINGD (optional: bench/time_to_accuracy.py's singd row). singd and einconv declare torch as a
# dependency, hence --no-deps; einops (pure Python, no dependencies) is their other need.
pip_install --no-deps singd einconv && pip_install einops \
  || echo "python_setup: singd not installed (optional)"
# scikit-learn (optional: time_to_accuracy.py --dataset breast_cancer, whose data ships inside
# it); a normal install, it pulls scipy, joblib and threadpoolctl, none of which needs torch.
pip_install scikit-learn || echo "python_setup: scikit-learn not installed (optional)"
echo "python_setup: ready in $(( $(date +%s) - start )) s"
echo "$VENV/bin/python"
