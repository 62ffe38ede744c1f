#!/usr/bin/env bash
# Syscall-semantics suite: every program in tests/semantics/ (plain and .fortify build) must behave
# identically with and without sdx.  For each program and build:
#   1. run it without the preload: stdout, stderr and exit code;
#   2. run it under sdx (`build/bin/sdx run --`, else LD_PRELOAD=build/lib/libsdx.so) with
#      SDX_STATS=1: the same three must come out, byte for byte;
#   3. both runs exit 0 (every check in the transcript passed);
#   4. under sdx, the stats file of the program's process says it tracked TCP sockets, and for a
#      .fortify build that each of __read_chk __recv_chk __recvfrom_chk __poll_chk __ppoll_chk
#      went through the shim on a tracked socket;
#   5. a .fortify binary references those five symbols (nm), so the fortified entry points are
#      really exercised;
#   6. a third run under sdx with accelerate=1 (the program's connections to itself go over shared
#      memory; its stats must say so) gives the same transcript and exit code as the plain run.
# Prints PASS NAME / FAIL NAME: WHY per case and ends with "semantics: N passed, M failed".
# The binaries come from the Makefile (`make semantics` builds them, then runs this).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

# shellcheck disable=SC2034  # read by summary() in tests/lib.sh
SUITE=semantics
# shellcheck source=tests/lib.sh
source tests/lib.sh

BIN_DIR=build/tests/semantics
SDX_BIN=build/bin/sdx
SDX_LIB=build/lib/libsdx.so
FORTIFIED=(__read_chk __recv_chk __recvfrom_chk __poll_chk __ppoll_chk)
RUN_TIMEOUT=60   # seconds per program run; each program normally needs well under one

tmp=$(mktemp -d /tmp/sdx-semantics.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# How the preloaded run is made.  SEM_MODE=sdx|ld_preload|none forces one (for debugging the suite).
if [[ -n ${SEM_MODE:-} ]]; then
  MODE=$SEM_MODE
  echo "# preload forced by SEM_MODE=$MODE"
  [[ $MODE == none ]] && echo "# NOTE: the with/without comparison and the stats assertions are NOT active in this run"
elif [[ -x $SDX_BIN && -f $SDX_LIB ]]; then
  MODE=sdx
  echo "# preload: $SDX_BIN run -- PROG"
elif [[ -f $SDX_LIB ]]; then
  MODE=ld_preload
  echo "# preload: LD_PRELOAD=$PWD/$SDX_LIB PROG ($SDX_BIN not built)"
else
  MODE=none
  echo "# NOTE: $SDX_LIB does not exist: every program runs WITHOUT the preload, twice; the"
  echo "#       with/without comparison and the stats assertions are NOT active in this run"
fi

# run_plain OUTDIR PROG: the program alone (no sdx variables, no sdx in LD_PRELOAD).
run_plain() {
  local dir=$1 prog=$2 pre=${LD_PRELOAD:-}
  pre=$(tr ':' '\n' <<<"$pre" | grep -v 'libsdx\.so' | paste -sd: -)
  env -u SDX_STATS -u SDX_STATS_FILE -u SDX_ACCELERATE LD_PRELOAD="$pre" \
    timeout -k 5 "$RUN_TIMEOUT" "$prog" >"$dir/out" 2>"$dir/err" </dev/null
  echo $? >"$dir/rc"
}

# run_sdx OUTDIR PROG: the program under the preload, stats into OUTDIR/stats-PID.json.
# (Redirections sit on the command itself, as in run_plain, so that both runs are captured alike.)
run_sdx() {
  local dir=$1 prog=$2 accel=${3:-0}
  local -a cmd=(env SDX_STATS=1 "SDX_STATS_FILE=$dir/stats-%p.json" "SDX_ACCELERATE=$accel")
  case $MODE in
    sdx)        cmd+=(timeout -k 5 "$RUN_TIMEOUT" "$SDX_BIN" run -- "$prog") ;;
    ld_preload) cmd+=("LD_PRELOAD=$PWD/$SDX_LIB${LD_PRELOAD:+:$LD_PRELOAD}" timeout -k 5 "$RUN_TIMEOUT" "$prog") ;;
    *)          cmd=(env -u LD_PRELOAD timeout -k 5 "$RUN_TIMEOUT" "$prog") ;;
  esac
  "${cmd[@]}" >"$dir/out" 2>"$dir/err" </dev/null
  echo $? >"$dir/rc"
}

# check_stats DIR PROGRAM FORTIFY ACCEL: the stats files of the process named PROGRAM (with
# ACCEL=1: its sockets were accelerated, and bytes went over sdx).
check_stats() {
  python3 - "$1" "$2" "$3" "$4" "${FORTIFIED[@]}" <<'EOF'
import glob, json, os, sys
d, program, fortify, accel, names = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5:]
files = sorted(glob.glob(os.path.join(d, "stats-*.json")))
if not files:
    sys.exit("no stats file written (SDX_STATS=1 SDX_STATS_FILE=%s/stats-%%p.json)" % d)
mine, bad = [], []
for f in files:
    try:
        with open(f) as fh:
            j = json.load(fh)
    except Exception as e:
        bad.append("%s: %s" % (os.path.basename(f), e))
        continue
    if j.get("program") == program:
        mine.append(j)
if bad:
    sys.exit("unreadable stats file(s): " + "; ".join(bad))
if not mine:
    sys.exit("no stats file for program %r among %d file(s)" % (program, len(files)))
tracked = sum(int(j.get("sockets", {}).get("tracked", 0)) for j in mine)
if tracked <= 0:
    sys.exit("sockets.tracked is %d, expected > 0" % tracked)
if accel:
    acc = sum(int(j.get("sockets", {}).get("accelerated", 0)) for j in mine)
    tx = sum(int(j.get("bytes", {}).get("sdx_tx", 0)) for j in mine)
    if acc <= 0 or tx <= 0:
        sys.exit("with accelerate=1: sockets.accelerated=%d, bytes.sdx_tx=%d, expected both > 0" % (acc, tx))
    print("accelerated=%d sdx_tx=%d" % (acc, tx))
    sys.exit(0)
if fortify:
    calls = {}
    for j in mine:
        for k, v in j.get("calls", {}).items():
            calls[k] = calls.get(k, 0) + int(v)
    missing = [n for n in names if calls.get(n, 0) <= 0]
    if missing:
        sys.exit("calls not counted on tracked sockets: " + ", ".join("%s=%d" % (n, calls.get(n, 0)) for n in missing))
    print("tracked=%d %s" % (tracked, " ".join("%s=%d" % (n, calls[n]) for n in names)))
else:
    print("tracked=%d" % tracked)
EOF
}

# "exit N", naming timeouts and signals.
describe_exit() {
  case $1 in
    124|137) echo "timed out after ${RUN_TIMEOUT}s (exit $1)" ;;
    *) if (($1 > 128)); then echo "killed by signal $(($1 - 128)) (exit $1)"; else echo "exit $1"; fi ;;
  esac
}

# The failed checks of a run, then the start of its stderr.
problems() {
  grep -E '^FAIL' "$1/out" | head -n 15
  [[ -s $1/out ]] && ! grep -qE '^# [0-9]+ passed' "$1/out" && echo "(transcript ends early at: $(tail -n 1 "$1/out"))"
  head -c 4000 "$1/err" | head -n 5
}

shopt -s nullglob
SOURCES=(tests/semantics/*.cpp)
if ((${#SOURCES[@]} == 0)); then
  fail "programs" "no tests/semantics/*.cpp"
fi

notes=()
for src in "${SOURCES[@]}"; do
  name=$(basename "$src" .cpp)
  for variant in "" .fortify; do
    case_name=$name$variant
    prog=$BIN_DIR/$case_name
    if [[ ! -x $prog ]]; then
      fail "$case_name" "$prog is not built (make semantics builds it)"
      continue
    fi
    if [[ $src -nt $prog || tests/semantics/check.hpp -nt $prog ]]; then
      notes+=("$prog is older than its sources: rebuild (make semantics)")
    fi
    d=$tmp/$case_name
    mkdir -p "$d/plain" "$d/sdx" "$d/accel"
    why=()

    if [[ -n $variant ]]; then
      syms=$(nm -D --undefined-only "$prog" 2>&1)
      for f in "${FORTIFIED[@]}"; do
        grep -qE "^ +U $f(@|$)" <<<"$syms" || why+=("binary does not reference $f (nm -D): the fortify build did not use the checked entry point")
      done
    fi

    run_plain "$d/plain" "$prog"
    run_sdx "$d/sdx" "$prog"
    rc_plain=$(cat "$d/plain/rc") rc_sdx=$(cat "$d/sdx/rc")
    # Third run: every connection the program makes to itself goes over shared memory.
    if [[ $MODE != none ]]; then
      run_sdx "$d/accel" "$prog" 1
      rc_accel=$(cat "$d/accel/rc")
      ((rc_accel == 0)) || why+=("$(describe_exit "$rc_accel") under sdx with accelerate=1:
$(problems "$d/accel")")
      if ! cmp -s "$d/plain/out" "$d/accel/out"; then
        why+=("stdout differs with acceleration (--- without sdx, +++ accelerated):
$(diff -u "$d/plain/out" "$d/accel/out" | head -n 40)")
      fi
      if ! cmp -s "$d/plain/err" "$d/accel/err"; then
        why+=("stderr differs with acceleration (--- without sdx, +++ accelerated):
$(diff -u "$d/plain/err" "$d/accel/err" | head -n 20)")
      fi
      if astats=$(check_stats "$d/accel" "$case_name" 0 1 2>&1); then :; else why+=("accelerated stats: $astats"); astats=""; fi
    fi

    ((rc_plain == 0)) || why+=("$(describe_exit "$rc_plain") without sdx:
$(problems "$d/plain")")
    ((rc_sdx == 0)) || why+=("$(describe_exit "$rc_sdx") under sdx:
$(problems "$d/sdx")")
    grep -qE '^ok ' "$d/plain/out" || why+=("no check ran (empty transcript)")
    grep -qE '^# [0-9]+ passed, 0 failed$' "$d/plain/out" || why+=("transcript has no final '# N passed, 0 failed' line")
    if ! cmp -s "$d/plain/out" "$d/sdx/out"; then
      why+=("stdout differs with sdx (--- without, +++ with):
$(diff -u "$d/plain/out" "$d/sdx/out" | head -n 40)")
    fi
    if ! cmp -s "$d/plain/err" "$d/sdx/err"; then
      why+=("stderr differs with sdx (--- without, +++ with):
$(diff -u "$d/plain/err" "$d/sdx/err" | head -n 20)")
    fi
    [[ $rc_plain == "$rc_sdx" ]] || why+=("exit status differs: $rc_plain without sdx, $rc_sdx with")

    stats=""
    if [[ $MODE != none ]]; then
      if stats=$(check_stats "$d/sdx" "$case_name" "$([[ -n $variant ]] && echo 1 || echo 0)" 0 2>&1); then :; else
        why+=("stats: $stats")
        stats=""
      fi
    fi

    while IFS= read -r line; do
      [[ -n $line ]] && notes+=("$case_name: $line")
    done < <(grep -E '^skip ' "$d/plain/out" | sed 's/^skip /skipped: /')

    checks=$(grep -cE '^ok ' "$d/plain/out")
    if ((${#why[@]} == 0)); then
      pass "$case_name ($checks checks${stats:+; $stats}${astats:+; $astats})"
    else
      fail "$case_name" "$(printf '%s\n' "${why[@]}")"
    fi
  done
done

if [[ $MODE == none ]]; then
  notes+=("the preload was not available: transcripts were NOT compared with sdx and stats were NOT checked")
fi
for n in "${notes[@]}"; do echo "NOTE $n"; done
summary
