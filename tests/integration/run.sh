#!/usr/bin/env bash
# Integration suite: real, unmodified programs (iperf3, sockperf, redis, nginx + curl, python's
# http.server, ssh/sshd, socat) run the same scenario twice, plain and with every process (servers
# and clients) under `build/bin/sdx run --`, and the results must be correct and identical. In sdx
# mode each case also checks the shim's per-process stats files (SDX_STATS=1) to prove it was loaded
# and saw the data calls.
#
# usage: tests/integration/run.sh [-m plain|sdx|both] [-k] [CASE-REGEX]
#   -m MODE   which mode(s) to run (default both: plain first, then sdx, compared case by case)
#   -k        keep the temp directory (logs, outputs, stats files) and print its path
#   REGEX     run only the cases whose name matches (bash regex)
# Ends with "integration: N passed, M failed"; exits non-zero on any failure. The sdx mode is never
# skipped: a missing build/bin/sdx or build/lib/libsdx.so fails every sdx case.
# shellcheck disable=SC1090,SC1091,SC2034  # sourced helpers and cases share variables
set -euo pipefail
SUITE=integration
cd "$(dirname "$0")/../.."
source tests/lib.sh
cd "$ROOT"
source tests/integration/lib.sh

MODES=(plain sdx)
KEEP=0
ONLY=
while getopts "m:kh" opt; do
  case $opt in
    m) case $OPTARG in
         plain) MODES=(plain) ;;
         sdx) MODES=(sdx) ;;
         both) MODES=(plain sdx) ;;
         *) echo "run.sh: -m plain|sdx|both" >&2; exit 2 ;;
       esac ;;
    k) KEEP=1 ;;
    *) sed -n '8,13s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
ONLY=${1:-}

# Plain must be plain: nothing preloaded from the caller's environment.
unset LD_PRELOAD SDX_STATS SDX_STATS_FILE

RUN_DIR=$(mktemp -d /tmp/sdx-integration.XXXXXX)
chmod 755 "$RUN_DIR"
: >"$RUN_DIR/pids"

# Whatever happens (failure, ^C, a bug here), no server outlives the run.
cleanup_run() {
  local rc=$? pid
  trap - EXIT INT TERM
  while read -r pid; do
    [[ -n $pid ]] || continue
    if kill -0 -- "-$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 0.2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done <"$RUN_DIR/pids"
  wait 2>/dev/null || true
  if ((KEEP)); then echo "integration: kept $RUN_DIR"; else rm -rf "$RUN_DIR"; fi
  exit "$rc"
}
trap cleanup_run EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight -----------------------------------------------------------------------------------
missing=()
for c in iperf3 sockperf redis-server redis-benchmark redis-cli nginx curl socat ssh ssh-keygen \
  /usr/sbin/sshd "$PY" ss setsid timeout numfmt sha256sum; do
  command -v "$c" >/dev/null || missing+=("$c")
done
if ((${#missing[@]})); then
  fail "preflight" "missing programs: ${missing[*]} (make deps)"
  summary
  exit 1
fi

# --- shared data: random files, the same bytes for both modes ------------------------------------
DATA=$RUN_DIR/data
mkdir -p "$DATA/www"
for spec in empty:0 one:1 small:1000 odd:65537 meg:1048576 big:10485883; do
  head -c "${spec#*:}" /dev/urandom >"$DATA/www/${spec%%:*}.bin"
done
head -c 4096 /dev/urandom >"$DATA/www/value4k.bin"
chmod -R a+rX "$DATA"

# --- cases ---------------------------------------------------------------------------------------
CASE_NAMES=()
CASE_FNS=()
register() { CASE_NAMES+=("$1"); CASE_FNS+=("$2"); }
for f in tests/integration/cases/*.sh; do source "$f"; done

t_start=$SECONDS
for MODE in "${MODES[@]}"; do
  t_mode=$SECONDS
  for i in "${!CASE_NAMES[@]}"; do
    run_case "${CASE_NAMES[$i]}" "${CASE_FNS[$i]}"
  done
  echo "($MODE mode: $((SECONDS - t_mode))s)"
done
echo "(total: $((SECONDS - t_start))s)"
summary
