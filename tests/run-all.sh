#!/usr/bin/env bash
# Runs every test suite (what `make test` calls) and ends with one line: "N passed, N failed".
# A suite that is missing, crashes or reports no passed check counts as failed: a green run that
# skipped tests would be a red run.
set -uo pipefail
cd "$(dirname "$0")/.."

SUITES=(unit cli semantics integration accel faults)
total_pass=0
total_fail=0
failed_suites=()

run_suite() {
  local name=$1 log=build/tests/$1.log rc
  mkdir -p build/tests
  echo "=== $name"
  case $name in
    unit) build/tests/unit_tests --gtest_brief=1 2>&1 | tee "$log" ;;
    *)    "tests/$name/run.sh" 2>&1 | tee "$log" ;;
  esac
  rc=${PIPESTATUS[0]}
  local p=0 f=0 line
  if [[ $name == unit ]]; then
    line=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -1)
    [[ -n $line ]] && p=$(sed -E 's/.*\] ([0-9]+) test.*/\1/' <<<"$line")
    line=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | tail -1)
    [[ -n $line ]] && f=$(sed -E 's/.*\] ([0-9]+) test.*/\1/' <<<"$line")
  else
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
    if [[ -n $line ]]; then
      p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
      f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    fi
  fi
  if [[ $rc != 0 || $p == 0 ]]; then
    failed_suites+=("$name")
    [[ $f == 0 ]] && f=1
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
}

for s in "${SUITES[@]}"; do run_suite "$s"; done

echo
if ((${#failed_suites[@]})); then echo "failed suites: ${failed_suites[*]}"; fi
echo "${total_pass} passed, ${total_fail} failed"
((${#failed_suites[@]} == 0 && total_fail == 0))
