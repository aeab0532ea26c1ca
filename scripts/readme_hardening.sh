#!/usr/bin/env bash
# Copy the table of the last hardening run (scripts/ci_hardening.sh writes
# build-hardening/summary.md) into README.md between its hardening-summary markers, so the
# README's sanitizer, valgrind and fuzzing numbers are generated, never typed.
# Usage: bash scripts/readme_hardening.sh [SUMMARY.md]
set -euo pipefail
cd "$(dirname "$0")/.."
summary="${1:-build-hardening/summary.md}"
[ -f "$summary" ] || { echo "readme_hardening: no $summary (run scripts/ci_hardening.sh)" >&2; exit 1; }
python3 - "$summary" README.md <<'PY'
import sys
summary, readme = sys.argv[1], sys.argv[2]
begin, end = "<!-- hardening-summary:begin -->", "<!-- hardening-summary:end -->"
lines = open(summary).read().splitlines()
stamp = next((l for l in lines if " UTC, commit " in l), "")
table = [l for l in lines if l.startswith("|")]
text = open(readme).read()
if begin not in text or end not in text:
    sys.exit("readme_hardening: README.md has no hardening-summary markers")
block = "\n".join([begin, f"Last run: {stamp} (`scripts/ci_hardening.sh`, copied by "
                   "`scripts/readme_hardening.sh`).", "", *table, end])
head, rest = text.split(begin, 1)
open(readme, "w").write(head + block + rest.split(end, 1)[1])
print(f"readme_hardening: {len(table) - 2} rows from {summary}")
PY
