#!/usr/bin/env bash
# Hardening checks of the CPU build, each reported in build-hardening/summary.md:
#  1. AddressSanitizer + UndefinedBehaviorSanitizer: the whole ctest suite built in build-asan
#     (leak detection on, UB fatal);
#  2. valgrind memcheck on a subset of the CPU test binary (plain build, no sanitizers);
#  3. libFuzzer on the checkpoint loader (fuzz/), clang, for a bounded time.
# Every step runs even when an earlier one failed; the exit status is nonzero if any failed.
# Knobs: FNGD_FUZZ_SECONDS (default 60), FNGD_VALGRIND_FILTER (gtest filter),
#        FNGD_HARDENING_JOBS (default nproc).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=build-hardening
mkdir -p "$OUT"
JOBS=${FNGD_HARDENING_JOBS:-$(nproc)}
FUZZ_SECONDS=${FNGD_FUZZ_SECONDS:-60}
# Everything but the long random sweep against the dense reference (~3 min more under valgrind).
VALGRIND_FILTER=${FNGD_VALGRIND_FILTER:-'-Reference/Direction.*'}
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

ROWS=()   # summary table rows
FAILED=0
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); [ "$2" = PASS ] || FAILED=1; }
now() { date +%s; }

apt_install() {
  echo "ci_hardening: installing $*"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "$@"
}

bash scripts/install_deps.sh || true

# ---- 1. ASan + UBSan over the whole suite ------------------------------------------------------
t0=$(now)
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
asan_log="$OUT/asan-ctest.log"
if cmake -S . -B build-asan "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFNGD_ENABLE_CUDA=OFF \
     -DFNGD_BUILD_BENCH=OFF -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" \
     -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" >"$OUT/asan-build.log" 2>&1 &&
   cmake --build build-asan -j"$JOBS" >>"$OUT/asan-build.log" 2>&1; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$JOBS" >"$asan_log" 2>&1
  rc=$?
  summary=$(grep -E "tests passed" "$asan_log" | tail -1)
  san_reports=$(grep -cE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$asan_log")
  if [ $rc -eq 0 ] && [ "$san_reports" -eq 0 ]; then
    row "ASan + UBSan, ctest (build-asan)" PASS "$summary; 0 sanitizer reports" "$(( $(now) - t0 )) s"
  else
    row "ASan + UBSan, ctest (build-asan)" FAIL "$summary; $san_reports sanitizer reports (see $asan_log)" "$(( $(now) - t0 )) s"
  fi
else
  row "ASan + UBSan, ctest (build-asan)" FAIL "build failed (see $OUT/asan-build.log)" "$(( $(now) - t0 )) s"
fi

# ---- 2. valgrind memcheck on a subset ----------------------------------------------------------
t0=$(now)
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
vg_log="$OUT/valgrind.log"
if cmake -S . -B "$OUT/valgrind" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFNGD_ENABLE_CUDA=OFF \
     -DFNGD_BUILD_EXAMPLES=OFF -DFNGD_BUILD_BENCH=OFF >"$OUT/valgrind-build.log" 2>&1 &&
   cmake --build "$OUT/valgrind" -j"$JOBS" --target fngd_tests >>"$OUT/valgrind-build.log" 2>&1; then
  # GoogleTest prints a test parameter that has no PrintTo as its raw bytes, padding included,
  # when it registers the parameterised tests: reads of uninitialised padding inside the test
  # framework, never in libfngd. Only that is suppressed.
  cat >"$OUT/valgrind.supp" <<'SUPP'
{
   gtest-prints-raw-bytes-of-test-parameters-cond
   Memcheck:Cond
   ...
   fun:*PrintBytesInObjectTo*
}
{
   gtest-prints-raw-bytes-of-test-parameters-value
   Memcheck:Value8
   ...
   fun:*PrintBytesInObjectTo*
}
SUPP
  # One BLAS thread keeps valgrind's serialised run short; valgrind lacks AVX-512, so pin
  # OpenBLAS to an AVX2 kernel set.
  OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell \
    valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
      --suppressions="$OUT/valgrind.supp" \
      --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
      "$OUT/valgrind/tests/fngd_tests" --gtest_filter="$VALGRIND_FILTER" >"$vg_log" 2>&1
  rc=$?
  tests=$(grep -E "^\[  PASSED  \]" "$vg_log" | tail -1 | sed -e 's/\[  PASSED  \] //' -e 's/\.$//')
  errors=$(grep -E "ERROR SUMMARY" "$vg_log" | tail -1 | sed 's/.*ERROR SUMMARY: \([0-9]*\) errors.*suppressed: \([0-9]*\).*/\1 errors (\2 suppressed in GoogleTest parameter printing)/')
  lost=$(grep -E "definitely lost:" "$vg_log" | tail -1 | sed 's/.*definitely lost: //')
  detail="filter \`$VALGRIND_FILTER\`: ${tests:-no tests passed}; ${errors:-? errors}; definitely lost ${lost:-0 bytes}"
  if [ $rc -eq 0 ]; then
    row "valgrind memcheck, fngd_tests subset" PASS "$detail" "$(( $(now) - t0 )) s"
  else
    row "valgrind memcheck, fngd_tests subset" FAIL "$detail (see $vg_log)" "$(( $(now) - t0 )) s"
  fi
else
  row "valgrind memcheck, fngd_tests subset" FAIL "build failed (see $OUT/valgrind-build.log)" "$(( $(now) - t0 )) s"
fi

# ---- 3. libFuzzer on the state loader ----------------------------------------------------------
t0=$(now)
fz_log="$OUT/fuzz.log"
command -v clang >/dev/null 2>&1 || apt_install clang
probe="$OUT/fuzz-probe"
echo 'int LLVMFuzzerTestOneInput(const unsigned char* d, unsigned long n) { return 0; }' >"$probe.c"
if ! clang -fsanitize=fuzzer "$probe.c" -o "$probe" >/dev/null 2>&1; then
  major=$(clang -dumpversion | cut -d. -f1)
  apt_install "libclang-rt-$major-dev" || apt_install "libclang-common-$major-dev"
fi
if cmake -S fuzz -B "$OUT/fuzz" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
     -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >"$OUT/fuzz-build.log" 2>&1 &&
   cmake --build "$OUT/fuzz" -j"$JOBS" >>"$OUT/fuzz-build.log" 2>&1; then
  # Seeds: the committed corpus plus one written now by the current code (so a format change
  # is fuzzed from valid images even before fuzz/corpus is regenerated). New inputs go to the
  # work corpus, never into the repository.
  rm -rf "$OUT/fuzz-seed" && mkdir -p "$OUT/fuzz-seed" "$OUT/fuzz-corpus"
  "$OUT/fuzz/fngd_make_corpus" "$OUT/fuzz-seed" >"$OUT/fuzz-seed.log" 2>&1
  seeds=$(ls fuzz/corpus | wc -l)
  ASAN_OPTIONS=detect_leaks=1 "$OUT/fuzz/fuzz_state_loader" -max_total_time="$FUZZ_SECONDS" \
    -print_final_stats=1 -artifact_prefix="$OUT/fuzz-crash-" \
    "$OUT/fuzz-corpus" fuzz/corpus "$OUT/fuzz-seed" >"$fz_log" 2>&1
  rc=$?
  execs=$(grep -E "stat::number_of_executed_units" "$fz_log" | awk '{print $2}')
  rate=$(grep -E "stat::average_exec_per_sec" "$fz_log" | awk '{print $2}')
  units=$(ls "$OUT/fuzz-corpus" | wc -l)
  detail="${FUZZ_SECONDS} s, ${execs:-?} executions (${rate:-?}/s, each loaded as given and re-sealed), $seeds seeds, $units new corpus units"
  if [ $rc -eq 0 ]; then
    row "libFuzzer, fuzz_state_loader (ASan+UBSan)" PASS "$detail" "$(( $(now) - t0 )) s"
  else
    row "libFuzzer, fuzz_state_loader (ASan+UBSan)" FAIL "$detail; crash input in $OUT/fuzz-crash-* (see $fz_log)" "$(( $(now) - t0 )) s"
  fi
else
  row "libFuzzer, fuzz_state_loader (ASan+UBSan)" FAIL "build failed (see $OUT/fuzz-build.log)" "$(( $(now) - t0 )) s"
fi

# ---- summary -----------------------------------------------------------------------------------
{
  echo "# Hardening summary"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores"
  echo
  echo "| Check | Result | Details | Time |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$OUT/summary.md"
cat "$OUT/summary.md"
exit $FAILED
