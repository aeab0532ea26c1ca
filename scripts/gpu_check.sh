#!/usr/bin/env bash
# One command that verifies libfngd's CUDA path on a GPU machine and writes the evidence:
#
#   scripts/gpu_check.sh [--bundle DIR|TARBALL] [--build-dir DIR] [--budget SECONDS] OUTDIR
#   scripts/gpu_check.sh --dry-run OUTDIR        # mechanics only, no GPU needed (CI runs this)
#
# Steps, each with its own timeout inside one overall budget (default 470 s, under 8 minutes
# on an H100/H200; a step that would start after the budget is spent is recorded as skipped):
#   1. binaries: from a bundle made by scripts/gpu_bundle.sh (prebuilt for sm_80 and sm_90,
#      with the OpenBLAS/LAPACKE/gfortran libraries a GPU node may lack), or built here for
#      the local GPU's architecture only (nvidia-smi --query-gpu=compute_cap) with -lineinfo;
#   2. every case of the CUDA test binary with FNGD_REQUIRE_GPU=1 (a skip is a failure);
#   3. compute-sanitizer memcheck, racecheck, synccheck and initcheck on chosen cases (a tool
#      that refuses the device is recorded as "refused", never as a pass);
#   4. the Python CUDA tests (python/tests/test_cuda.py) when torch with CUDA imports;
#   5. the CUDA kernel benchmark (bench/bench_cuda_kernels.cu, --quick);
#   6. bench/resnet18_cifar.py --device cuda with a short setting (SGD and FNGD rows).
# OUTDIR receives summary.md plus at most 7 files: build.log, cuda_tests.log, sanitizer.log,
# python_cuda.log, bench.log, cuda_kernels.json, resnet18_cifar.json.
# Exit status: 0 when every step that ran passed (dry run: when the mechanics work), 1 when a
# step failed, 2 on a usage error.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
DRY=0
BUNDLE=""
BUILD_DIR=""
BUDGET=470
OUT=""
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --bundle) BUNDLE=${2:?--bundle needs a directory or tarball}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a directory}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "gpu_check: one OUTDIR only" >&2; exit 2; }; OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || { usage >&2; exit 2; }
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fngd-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
FAILED=0
ROWS=""          # markdown table rows of the summary
NOTES=""         # extra summary sections

now() { date +%s; }
left() { echo $(( BUDGET - ($(now) - START) )); }
row() {  # step, status, seconds, details
  ROWS+="| $1 | $2 | $3 | $4 |"$'\n'
  case "$2" in fail*) FAILED=1 ;; esac
  printf 'gpu_check: %-22s %s (%ss) %s\n' "$1" "$2" "$3" "$4"
}
# Seconds a step may take: its cap, or what is left of the budget; 0 when nothing is left.
step_limit() {
  local cap=$1 rest
  rest=$(( $(left) - 5 ))
  [ "$rest" -lt 10 ] && { echo 0; return; }
  [ "$rest" -lt "$cap" ] && echo "$rest" || echo "$cap"
}
# run LIMIT LOG CMD...: runs CMD with a timeout, appending to LOG; sets RC and SECS.
run() {
  local limit=$1 log=$2; shift 2
  local t0; t0=$(now)
  { echo "+ $*"; } >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  RC=$?
  SECS=$(( $(now) - t0 ))
  [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ] && echo "gpu_check: timed out after ${limit}s" >>"$log"
  return 0
}

# ---- the machine ------------------------------------------------------------------------------
GPU=""; CC=""; DRIVER=""
if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
  line=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null | head -1)
  GPU=$(echo "$line" | cut -d, -f1 | sed 's/^ *//;s/ *$//')
  CC=$(echo "$line" | cut -d, -f2 | tr -d ' ')
  DRIVER=$(echo "$line" | cut -d, -f3 | tr -d ' ')
fi
HAVE_GPU=0
[ -n "$CC" ] && HAVE_GPU=1
ARCH=${CC/./}
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
SANITIZER=$(command -v compute-sanitizer || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; } || true)
PY=$(command -v python3 || true)

# ---- 1. binaries ------------------------------------------------------------------------------
BIN=""; LIB=""; SRC=""
t0=$(now)
if [ -n "$BUNDLE" ]; then
  if [ -f "$BUNDLE" ]; then
    tar -xf "$BUNDLE" -C "$WORK" && BUNDLE=$(find "$WORK" -maxdepth 2 -name MANIFEST.txt -printf '%h\n' | head -1)
  fi
  if [ -n "$BUNDLE" ] && [ -f "$BUNDLE/MANIFEST.txt" ] && [ -x "$BUNDLE/bin/fngd_cuda_tests" ]; then
    BUNDLE=$(cd "$BUNDLE" && pwd)
    BIN=$BUNDLE/bin; LIB=$BUNDLE/lib; SRC="bundle $(sed -n 's/^commit: //p' "$BUNDLE/MANIFEST.txt")"
    export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    cp "$BUNDLE/MANIFEST.txt" "$OUT/build.log"
    row "binaries" "ok" "$(( $(now) - t0 ))" "prebuilt: $SRC"
  else
    row "binaries" "fail" "$(( $(now) - t0 ))" "no bundle (MANIFEST.txt, bin/fngd_cuda_tests) at $BUNDLE"
  fi
elif [ "$DRY" = 1 ]; then
  # Use a build that exists (this checkout's build/ or --build-dir); never compile in a dry run.
  for d in ${BUILD_DIR:+"$BUILD_DIR"} "$REPO/build"; do
    if [ -x "$d/tests/fngd_cuda_tests" ]; then BIN=$d; break; fi
  done
  if [ -n "$BIN" ]; then
    LIB=$BIN; SRC="build $BIN"
    row "binaries" "ok" "$(( $(now) - t0 ))" "found $BIN/tests/fngd_cuda_tests"
  else
    row "binaries" "skipped: no CUDA build" "0" "none in ${BUILD_DIR:-$REPO/build} (the CPU-only build has no CUDA tests)"
  fi
elif [ "$HAVE_GPU" = 0 ]; then
  row "binaries" "fail" "0" "no GPU (nvidia-smi found none): nothing to build for"
else
  BUILD_DIR=${BUILD_DIR:-$REPO/build-gpu-check}
  lim=$(step_limit 240)
  : >"$OUT/build.log"
  nvcc_dir=$(dirname "${NVCC:-/usr/local/cuda/bin/nvcc}")
  export PATH="$nvcc_dir:$PATH"
  run "$lim" "$OUT/build.log" cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
      -DFNGD_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${ARCH}-real" -DFNGD_CUDA_LINEINFO=ON \
      -DFNGD_BUILD_EXAMPLES=OFF
  if [ "$RC" = 0 ]; then
    lim=$(step_limit 240)
    run "$lim" "$OUT/build.log" cmake --build "$BUILD_DIR" -j"$(nproc)" --target fngd \
        fngd_cuda_tests fngd_bench_cuda_kernels
  fi
  if [ "$RC" = 0 ]; then
    BIN=$BUILD_DIR; LIB=$BUILD_DIR; SRC="built here for sm_$ARCH"
    row "binaries" "ok" "$(( $(now) - t0 ))" "$SRC in $BUILD_DIR"
  else
    row "binaries" "fail" "$(( $(now) - t0 ))" "build failed (build.log); without OpenBLAS/GoogleTest here use --bundle from scripts/gpu_bundle.sh"
  fi
fi
TESTS=""; BENCH=""
if [ -n "$BIN" ]; then
  for c in "$BIN/fngd_cuda_tests" "$BIN/tests/fngd_cuda_tests"; do [ -x "$c" ] && TESTS=$c; done
  for c in "$BIN/fngd_bench_cuda_kernels" "$BIN/bench/fngd_bench_cuda_kernels"; do [ -x "$c" ] && BENCH=$c; done
  for c in "$LIB/libfngd.so" "$LIB/lib/libfngd.so"; do [ -e "$c" ] && LIBFNGD=$c; done
fi
LIBFNGD=${LIBFNGD:-}

# cuDNN, cuBLAS and cuSOLVER come from the CUDA toolkit or the pip wheels beside torch.
if [ -n "$TESTS" ] && [ "$DRY" = 0 ]; then
  extra=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && extra+=":$d"; done
  if [ -n "$PY" ]; then
    for m in cudnn cublas cusolver cuda_runtime nvjitlink cusparse; do
      d=$("$PY" -c "import nvidia.$m as m, os; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null) && extra+=":$d"
    done
  fi
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
  missing=$(ldd "$TESTS" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
  [ -n "$missing" ] && NOTES+=$'\n'"Libraries not found for the test binary: $missing"$'\n'
fi

gpu_step() {  # name: records "skipped: no GPU" in a dry run or without a GPU; else returns 0
  if [ "$DRY" = 1 ]; then row "$1" "skipped: no GPU" "0" "dry run"; return 1; fi
  if [ "$HAVE_GPU" = 0 ]; then row "$1" "fail" "0" "no GPU"; return 1; fi
  if [ -z "$TESTS" ]; then row "$1" "fail" "0" "no binaries"; return 1; fi
  return 0
}

# ---- 2. CUDA tests, no skip allowed -------------------------------------------------------------
if [ "$DRY" = 1 ] && [ -n "$TESTS" ]; then
  # Mechanics: the binary starts and lists its cases.
  n=$("$TESTS" --gtest_list_tests 2>/dev/null | grep -c '^  ' || true)
  NOTES+=$'\n'"Dry run: $TESTS lists $n test cases; bench binary: ${BENCH:-none}."$'\n'
fi
if gpu_step "cuda tests"; then
  lim=$(step_limit 150)
  if [ "$lim" = 0 ]; then row "cuda tests" "skipped: time budget" 0 ""; else
    : >"$OUT/cuda_tests.log"
    run "$lim" "$OUT/cuda_tests.log" env FNGD_REQUIRE_GPU=1 "$TESTS"
    pass=$(grep -c '^\[       OK \]' "$OUT/cuda_tests.log" || true)
    fail=$(grep -c '^\[  FAILED  \] [A-Za-z].*(' "$OUT/cuda_tests.log" || true)
    skip=$(grep -c '^\[  SKIPPED \] [A-Za-z].*(' "$OUT/cuda_tests.log" || true)
    st=ok; [ "$RC" = 0 ] && [ "$skip" = 0 ] || st=fail
    row "cuda tests" "$st" "$SECS" "$pass passed, $fail failed, $skip skipped (FNGD_REQUIRE_GPU=1, rc $RC)"
  fi
fi

# ---- 3. compute-sanitizer -------------------------------------------------------------------------
# The cases: the fused kernels of every layer kind and both Gram methods, the solves, the
# coefficient table and the cuDNN path (racecheck and synccheck: the shared-memory kernels).
MEMCHECK_CASES='CudaBackend.LayerGramMatchesCpu*:CudaBackend.WeightedGradMatchesCpu*:CudaBackend.FactorSolve*:CudnnWeighted.ConvMatchesCpuFp32:CudnnWeighted.LinearMatchesCpu*:CudnnWeighted.ChunkedPlanMatchesCpu:Backends/BackendOps.*'
SHARED_CASES='CudaBackend.WeightedGradMatchesCpu*:CudaBackend.LayerGramMatchesCpu*:CudnnWeighted.LinearMatchesCpu*'
if gpu_step "sanitizers"; then
  : >"$OUT/sanitizer.log"
  if [ -z "$SANITIZER" ]; then
    row "sanitizers" "fail" 0 "compute-sanitizer not found"
  else
    for tool in memcheck racecheck synccheck initcheck; do
      cases=$MEMCHECK_CASES; cap=100
      case $tool in racecheck|synccheck) cases=$SHARED_CASES; cap=70 ;; esac
      lim=$(step_limit $cap)
      if [ "$lim" = 0 ]; then row "sanitizer $tool" "skipped: time budget" 0 ""; continue; fi
      extra=(); [ "$tool" = memcheck ] && extra=(--leak-check full)
      before=$(wc -l <"$OUT/sanitizer.log")
      run "$lim" "$OUT/sanitizer.log" env FNGD_REQUIRE_GPU=1 "$SANITIZER" --tool "$tool" \
          "${extra[@]}" --error-exitcode 97 --print-limit 50 "$TESTS" --gtest_filter="$cases"
      part=$(tail -n +"$((before + 1))" "$OUT/sanitizer.log")
      errs=$(echo "$part" | sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p' | tail -1)
      refused=$(echo "$part" | grep -m1 -iE 'device not supported|not supported on this|unable to (initialize|launch)|failed to (initialize|attach)|error 999|Target application terminated before first instrumented API call' || true)
      if [ -n "$refused" ] && [ -z "$errs" ]; then
        row "sanitizer $tool" "refused" "$SECS" "compute-sanitizer refused: ${refused//|/\\|}"
        NOTES+=$'\n'"compute-sanitizer $tool did not run: \`${refused}\` (not a pass; see sanitizer.log)."$'\n'
      elif [ "$RC" = 0 ] && [ "${errs:-x}" = 0 ]; then
        row "sanitizer $tool" "ok" "$SECS" "0 errors"
      elif [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        row "sanitizer $tool" "fail: timeout" "$SECS" "after ${lim}s, ${errs:-?} errors so far"
      else
        row "sanitizer $tool" "fail" "$SECS" "${errs:-?} errors, rc $RC"
      fi
    done
  fi
fi

# ---- 4. Python CUDA tests -------------------------------------------------------------------------
if gpu_step "python cuda tests"; then
  if [ -z "$PY" ] || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    row "python cuda tests" "skipped: no torch with CUDA" 0 "${PY:-no python3}"
  elif [ -z "$LIBFNGD" ]; then
    row "python cuda tests" "fail" 0 "no libfngd.so"
  else
    lim=$(step_limit 120)
    if [ "$lim" = 0 ]; then row "python cuda tests" "skipped: time budget" 0 ""; else
      : >"$OUT/python_cuda.log"
      run "$lim" "$OUT/python_cuda.log" env FNGD_LIBRARY="$LIBFNGD" \
          PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}" \
          "$PY" -m pytest python/tests/test_cuda.py -q -rs -p no:cacheprovider
      res=$(grep -E '[0-9]+ (passed|failed|skipped)' "$OUT/python_cuda.log" | tail -1)
      st=ok; [ "$RC" = 0 ] || st=fail
      echo "$res" | grep -q skipped && st="fail: skips"
      row "python cuda tests" "$st" "$SECS" "${res:-rc $RC}"
    fi
  fi
fi

# ---- 5. CUDA kernel benchmark -----------------------------------------------------------------------
if [ "$DRY" = 1 ] && [ -n "$BENCH" ]; then
  "$BENCH" --help >/dev/null 2>&1 && NOTES+=$'\n'"Dry run: the bench binary answers --help."$'\n'
fi
if gpu_step "cuda kernel bench"; then
  if [ -z "$BENCH" ]; then row "cuda kernel bench" "fail" 0 "no bench binary"; else
    lim=$(step_limit 120)
    if [ "$lim" = 0 ]; then row "cuda kernel bench" "skipped: time budget" 0 ""; else
      : >"$OUT/bench.log"
      run "$lim" "$OUT/bench.log" "$BENCH" --quick --out "$OUT/cuda_kernels.json"
      st=ok; [ "$RC" = 0 ] && [ -s "$OUT/cuda_kernels.json" ] || st=fail
      row "cuda kernel bench" "$st" "$SECS" "cuda_kernels.json"
      net=$(grep -E '^weighted network|^epoch one network' "$OUT/bench.log")
      [ -n "$net" ] && NOTES+=$'\n'"### Kernel bench (N = 128, ResNet-18 CIFAR shapes)"$'\n\n```\n'"$net"$'\n```\n'
    fi
  fi
fi

# ---- 6. ResNet-18 step times ------------------------------------------------------------------------
if gpu_step "resnet18 bench"; then
  if [ -z "$PY" ] || ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    row "resnet18 bench" "skipped: no torch with CUDA" 0 ""
  else
    lim=$(step_limit 120)
    if [ "$lim" = 0 ]; then row "resnet18 bench" "skipped: time budget" 0 ""; else
      touch "$OUT/bench.log"
      run "$lim" "$OUT/bench.log" env FNGD_LIBRARY="$LIBFNGD" \
          PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
          "$PY" bench/resnet18_cifar.py --device cuda --steps 50 --warmup 5 \
          --optimizers "${FNGD_GPU_CHECK_OPTIMIZERS:-sgd,fngd-layer,fngd-global,kfac-pytorch,asdl-kfac}" \
          --out "$WORK/resnet18"
      [ -f "$WORK/resnet18/results.json" ] && cp "$WORK/resnet18/results.json" "$OUT/resnet18_cifar.json"
      st=ok; [ "$RC" = 0 ] && [ -f "$OUT/resnet18_cifar.json" ] || st=fail
      row "resnet18 bench" "$st" "$SECS" "50 timed steps per row, resnet18_cifar.json"
      [ -f "$WORK/resnet18/results.md" ] && NOTES+=$'\n'"### ResNet-18 / CIFAR-100 step times"$'\n\n'"$(cat "$WORK/resnet18/results.md")"$'\n'
    fi
  fi
fi

# ---- summary ------------------------------------------------------------------------------------------
TOTAL=$(( $(now) - START ))
{
  echo "# libfngd GPU check"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), total ${TOTAL} s (budget ${BUDGET} s)"
  echo "- mode: $([ "$DRY" = 1 ] && echo 'dry run (no GPU step executed)' || echo 'GPU run')"
  echo "- commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- GPU: ${GPU:-none}${CC:+, compute capability $CC}${DRIVER:+, driver $DRIVER}"
  echo "- nvcc: ${NVCC:-none}; compute-sanitizer: ${SANITIZER:-none}; python3: ${PY:-none}"
  echo "- binaries: ${SRC:-none}"
  echo
  echo "| step | status | seconds | details |"
  echo "|---|---|---|---|"
  printf '%s' "$ROWS"
  printf '%s' "$NOTES"
} >"$OUT/summary.md"
echo "gpu_check: wrote $OUT/summary.md ($(ls "$OUT" | wc -l) files)"
if [ "$DRY" = 1 ]; then
  # The dry run passes when the mechanics work: OUTDIR written, every GPU step marked skipped.
  grep -q 'skipped: no GPU' "$OUT/summary.md" && [ "$FAILED" = 0 ] && exit 0
  exit 1
fi
exit "$FAILED"
