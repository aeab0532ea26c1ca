#!/usr/bin/env bash
# README command one: build everything, then train the digits network with SGD and FNGD.
# CPU backend by default; pass --backend cuda on a machine with a GPU. Extra args go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/examples/fngd_train_digits "$@"
