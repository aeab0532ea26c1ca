#!/usr/bin/env bash
# Make a Python environment that can run python/tests and bench/resnet18_cifar.py on the CPU:
# torch from PyPI plus pytest, numpy and matplotlib, in a virtual environment at $FNGD_VENV
# (default ~/.cache/fngd/venv, reused while it works). Progress (pip's own output included) goes
# to stderr; stdout carries only the environment's python path, so that
# `py=$(bash scripts/python_setup.sh)` shows the progress and captures the path.
#
# PyPI's Linux torch wheel is a CUDA build whose default dependencies are ~5 GB of nvidia-*
# wheels and triton. `pip install --no-deps torch` alone does not import (libtorch_cuda.so
# needs libcufile, libcusparseLt, libnvshmem_host and a recent libnccl at load time, even on a
# CPU), so the cheap path installs torch without dependencies plus exactly those four wheels
# (~0.5 GB) and lets the CUDA toolkit of this machine kind (/usr/local/cuda/lib64 in the loader
# path) provide cuBLAS, cuDNN and the rest. If that environment does not import and run a
# backward pass, it falls back to the full default install, which always works.
# Measured on this machine kind (2 vCPUs, PyPI reachable, other jobs running, load 2-5): cheap
# path 44-64 s to "ready" (torch working after 35-51 s), ~2.4 GB with the optional packages
# (torch and the four nvidia wheels 1.9 GB); full install (FNGD_TORCH_FULL=1 forces it, not
# re-measured) 64-124 s and 5.5 GB.
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

log() { echo "python_setup: $*" >&2; }

works() {
  "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import torch, pytest, numpy, matplotlib
x = torch.randn(2, 3, 5, 5, requires_grad=True)
torch.nn.functional.conv2d(x, torch.randn(4, 3, 3, 3)).sum().backward()
assert x.grad is not None
EOF
}

if [ -x "$VENV/bin/python" ] && works; then
  log "$VENV already works"
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
log "creating $VENV"
"$PY" -m venv "$VENV"
# pip's progress lines (Collecting, Downloading, Installing) on stderr, like ours.
pip_install() {
  "$VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "$@" 1>&2
}

if [ "$TORCH_VERSION" = "2.15.0" ] && [ "${FNGD_TORCH_FULL:-0}" != "1" ]; then
  log "torch $TORCH_VERSION without its CUDA dependencies (cheap path)"
  # torch's pure-Python dependencies and the tools first, resolved by pip; torch and the four
  # load-time libraries last, with --no-deps. In this order no resolving install runs while a
  # torch with unmet (nvidia-*) requirements is installed, so pip's after-install conflict
  # check has nothing to report. (The other order printed "ERROR: pip's dependency resolver
  # does not currently take into account all the packages that are installed ... torch
  # 2.15.0 requires nvidia-cudnn-cu13==9.26.0.51 ..., which is not installed" for an
  # environment that works.) The resolving installs further down (einops, scikit-learn) check
  # only what they install and its dependents, which torch is not: no ERROR line either.
  pip_install "${PURE_DEPS[@]}" "${TOOLS[@]}"
  pip_install --no-deps "torch==$TORCH_VERSION" "${CHEAP_EXTRAS[@]}"
fi
if ! works; then
  log "full torch $TORCH_VERSION install (with its default dependencies)"
  pip_install "torch==$TORCH_VERSION" "${TOOLS[@]}"
  if ! works; then
    log "torch still does not import in $VENV"
    "$VENV/bin/python" -c "import torch" 1>&2 || true
    exit 1
  fi
fi
log "torch works ($(( $(date +%s) - start )) s); optional packages next"
# ASDL (optional: the benchmark's KFAC and SMW rows). Its declared dependency is torch, already
# here; --no-deps keeps pip from pulling torch's CUDA wheels again (~2 s instead of ~4 GB).
pip_install --no-deps asdfghjkl || log "asdfghjkl not installed (optional)"
# SINGD (optional: bench/time_to_accuracy.py's singd row). singd and einconv declare torch as a
# dependency, hence --no-deps; einops (pure Python, no dependencies) is their other need.
pip_install --no-deps singd einconv && pip_install einops \
  || log "singd not installed (optional)"
# scikit-learn (optional: time_to_accuracy.py --dataset breast_cancer, whose data ships inside
# it); a normal install, it pulls scipy, joblib and threadpoolctl, none of which needs torch.
pip_install scikit-learn || log "scikit-learn not installed (optional)"
# sacrebleu (optional: bench/transformer_bleu.py's BLEU); a normal install, its dependencies
# (portalocker, regex, tabulate, colorama, lxml, numpy) do not need torch.
pip_install sacrebleu || log "sacrebleu not installed (optional)"
log "ready in $(( $(date +%s) - start )) s"
echo "$VENV/bin/python"
