#!/usr/bin/env bash
# Runs every test (lit + CTest/GoogleTest + pytest of the Python package in
# BUILD/venv) against an existing build and ends
# with one plain line "N passed, N failed[, N skipped]". Exit status is non-zero
# on any failure. Usage: scripts/run_tests.sh [BUILD_DIR]
set -uo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPORTS="$BUILD/test-reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
JOBS=$(nproc)

echo "== lit"
/usr/lib/llvm-22/bin/lit "$BUILD/test/lit" -j "$JOBS" -sv --xunit-xml-output "$REPORTS/lit.xml"
lit_rc=$?

echo "== ctest"
ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure --output-junit "$ROOT/$REPORTS/ctest.xml"
ctest_rc=$?

echo "== pytest (python package)"
MIRAS_BUILD="$BUILD" "$BUILD/venv/bin/python" -m pytest "$ROOT/test/python" -q -p no:cacheprovider \
  --junitxml="$REPORTS/pytest.xml"
pytest_rc=$?

/usr/bin/python3 - "$REPORTS/lit.xml" "$REPORTS/ctest.xml" "$REPORTS/pytest.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        print(f"cannot read test report {path}: {err}", file=sys.stderr)
        failed += 1
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("status") in ("notrun", "disabled"):
            skipped += 1
        else:
            passed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
PY
summary_rc=$?
if [ $lit_rc -ne 0 ] || [ $ctest_rc -ne 0 ] || [ $pytest_rc -ne 0 ] || [ $summary_rc -ne 0 ]; then
  exit 1
fi
