#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build and test libfngd (CPU path).
# The CUDA toolkit, if present at /usr/local/cuda, is used as it is; nothing here installs it.
set -euo pipefail

packages=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libgtest-dev)
# Optional: MPI for the data-parallel C example (examples/dp_mpi_train.c and its mpirun -np 2
# test, built only when CMake finds MPI): `bash scripts/install_deps.sh --mpi` or
# FNGD_WITH_MPI=1.
if [ "${1:-}" = "--mpi" ] || [ "${FNGD_WITH_MPI:-0}" = "1" ]; then
  packages+=(openmpi-bin libopenmpi-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all Debian packages present"
fi
