# Helpers for the integration suite: real programs run twice, plain and under `sdx run`.
# shellcheck shell=bash disable=SC2034,SC2207  # SRV_RC etc. are read by the cases
# Sourced by run.sh (which sources ../lib.sh first for ROOT, SDX, LIB, pass, fail, summary).
#
# A case is a shell function run by run_case in its own subshell (set -Eeuo pipefail). Inside it:
#   CASE_DIR        private directory for the case's logs, outputs and stats files
#   MODE            plain | sdx
#   port            prints a free TCP port
#   start_server NAME CMD...   starts a server (in the mode) in its own session; sets SRV_PID
#   wait_port PORT PID         waits (bounded) until PORT listens; fails if PID died first
#   stop_server PID HOW        stops a server gracefully (HOW: a signal name, or "none" when it exits
#                              by itself) and reaps it; sets SRV_RC
#   cl ROLE CMD...             runs a client in the mode, under a timeout
#   die REASON                 fails the case
#   sig TEXT                   appends a line to the case's signature, which must be identical in
#                              both modes
#   expect_stats ROLE PROGRAM [--need-calls a,b]   (sdx mode only) checks the shim's stats files
# Every server started is killed (process group) and reaped when the case ends, pass or fail.

PY=/usr/bin/python3
INTEG_DIR=$ROOT/tests/integration
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-60}
READY_TIMEOUT=${READY_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-15}

# The variables of the mode: nothing in plain mode, the stats switches plus `sdx run --` in sdx mode.
# mode_prefix ROLE  ->  array W
mode_prefix() {
  W=()
  if [[ $MODE == sdx ]]; then
    mkdir -p "$CASE_DIR/stats/$1"
    W=(SDX_STATS=1 "SDX_STATS_FILE=$CASE_DIR/stats/$1/%p.json" "$SDX" run --)
  fi
}

die() {
  [[ -s $CASE_DIR/reason ]] || printf '%s\n' "$*" >"$CASE_DIR/reason"
  exit 1
}

sig() { printf '%s\n' "$*" >>"$CASE_DIR/sig"; }
note() { printf '%s\n' "$*" >>"$CASE_DIR/notes"; }

# A port nobody uses, outside the ephemeral range (so no client can be bound to it), not handed out
# before in this run.
port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    grep -qx "$p" "$RUN_DIR/ports" 2>/dev/null && continue
    [[ -z $(ss -HtanO "( sport = :$p or dport = :$p )" 2>/dev/null) ]] || continue
    echo "$p" >>"$RUN_DIR/ports"
    echo "$p"
    return 0
  done
  die "no free port found"
}

SERVERS=()
start_server() {
  local name=$1; shift
  mode_prefix server
  # setsid: its own process group, so stopping it takes its children too. Background jobs of a
  # script start with SIGINT/SIGQUIT ignored; servers stopped by SIGINT need the default back.
  setsid env --default-signal=INT,QUIT,TERM "${W[@]}" "$@" >"$CASE_DIR/$name.log" 2>&1 </dev/null &
  SRV_PID=$!
  SERVERS+=("$SRV_PID")
  echo "$SRV_PID" >>"$RUN_DIR/pids"
  echo "server $name: pid $SRV_PID: $*" >>"$CASE_DIR/case.log"
}

# alive PID: the process exists and is not a zombie.
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st:0:1} != Z ]]
}

wait_port() {
  local p=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT))
  local t0=$EPOCHREALTIME
  while :; do
    [[ -n $(ss -ltnH "sport = :$p" 2>/dev/null) ]] && break
    alive "$pid" || die "server (pid $pid) exited before listening on port $p"
    ((SECONDS < deadline)) || die "server (pid $pid) not listening on port $p after ${READY_TIMEOUT}s"
    sleep 0.02
  done
  echo "port $p ready after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')s" >>"$CASE_DIR/case.log"
}

# wait_exit PID: waits (bounded) for PID to exit and reaps it; sets SRV_RC.
wait_exit() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    ((SECONDS < deadline)) || die "server (pid $pid) still running ${STOP_TIMEOUT}s after it was asked to stop"
    sleep 0.02
  done
  SRV_RC=0
  wait "$pid" || SRV_RC=$?
  local s keep=()
  for s in "${SERVERS[@]}"; do [[ $s == "$pid" ]] || keep+=("$s"); done
  SERVERS=("${keep[@]}")
  # Anything of its process group that outlived it (workers, session children) goes too.
  kill -KILL -- "-$pid" 2>/dev/null || true
}

stop_server() {
  local pid=$1 how=$2
  [[ $how == none ]] || kill -s "$how" "$pid" 2>/dev/null || true
  wait_exit "$pid"
}

# descendants PID: the PIDs of PID's children, grandchildren, ... (by id, from /proc).
descendants() {
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

# On the way out of a case, pass or fail: servers (their process groups) and background clients
# (and what they started: timeout puts its command in a group of its own) get SIGTERM, then SIGKILL
# after a short grace, and are reaped.
cleanup_case() {
  local pid deadline victims=()
  for pid in $(jobs -p); do victims+=("$pid" $(descendants "$pid")); done
  for pid in "${SERVERS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${victims[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 3))
  for pid in "${SERVERS[@]}" "${victims[@]}"; do
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
  done
  for pid in "${SERVERS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for pid in "${victims[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# cl ROLE CMD...: a client, in the mode, bounded in time.
cl() {
  local role=$1; shift
  mode_prefix "$role"
  timeout -k 5 "$CLIENT_TIMEOUT" env "${W[@]}" "$@"
}

# expect_stats ROLE PROGRAM [--need-calls a,b,...]: sdx mode only. Some process of ROLE named PROGRAM
# left a stats file with tracked inet stream sockets and data calls on them (and, with --need-calls,
# a non-zero count of one of the named calls).
expect_stats() {
  [[ $MODE == sdx ]] || return 0
  local role=$1 prog=$2; shift 2
  local out
  if ! out=$("$PY" "$INTEG_DIR/stats.py" "$CASE_DIR/stats/$role" "$prog" "$@" 2>&1); then
    die "stats ($role $prog): $out"
  fi
  echo "stats $role: $out" >>"$CASE_DIR/case.log"
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# get_each_file PORT: one curl per file of $DATA/www from http://127.0.0.1:PORT/, each byte-exact
# into got/; a signature line per file.
get_each_file() {
  local p=$1 f b code
  mkdir -p got
  for f in "$DATA"/www/*.bin; do
    b=$(basename "$f")
    code=$(cl client curl -sS --max-time 50 -o "got/$b" -w '%{http_code}' "http://127.0.0.1:$p/$b") ||
      die "curl $b exited with status $?"
    [[ $code == 200 ]] || die "GET /$b: HTTP $code"
    same_file "GET /$b" "got/$b" "$f"
    sig "GET /$b 200 $(stat -c %s "$f") bytes sha256 ok"
  done
}

# same_file WHAT GOT WANT: byte-exact comparison by sha256.
same_file() {
  local got want
  [[ -f $2 ]] || die "$1: no output file $2"
  got=$(sha "$2"); want=$(sha "$3")
  [[ $got == "$want" ]] || die "$1: sha256 $got ($(stat -c %s "$2") bytes) != $want ($(stat -c %s "$3") bytes)"
}

# run_case NAME FUNCTION: runs one case in the current MODE, prints PASS/FAIL.
run_case() {
  local name=$1 fn=$2 slug t0 rc
  [[ -z $ONLY ]] || [[ $name =~ $ONLY ]] || return 0
  slug=$(tr -c 'A-Za-z0-9_.-' '_' <<<"$name"); slug=${slug%_}
  CASE_DIR=$RUN_DIR/$MODE/$slug
  mkdir -p "$CASE_DIR"
  local full="$MODE/$name"
  if [[ $MODE == sdx && ( ! -x $SDX || ! -f $LIB ) ]]; then
    fail "$full" "$SDX or $LIB missing: build them first (make); the sdx mode is never skipped"
    return 0
  fi
  t0=$EPOCHREALTIME
  # Not `( ... ) || rc=$?`: inside a || list bash ignores set -e (and the ERR trap) in the whole
  # subshell, so a failing command would not end the case.
  set +e
  (
    set -Eeuo pipefail
    trap cleanup_case EXIT
    trap 'die "line $LINENO: command failed (status $?): $BASH_COMMAND"' ERR
    cd "$CASE_DIR"
    "$fn"
  ) >>"$CASE_DIR/case.log" 2>&1
  rc=$?
  set -e
  local secs; secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
  echo "$full ${secs}s" >>"$RUN_DIR/times"
  # The same results as plain (when the plain run of the case passed: a failed one is no reference).
  if ((rc == 0)) && [[ $MODE == sdx && -f $RUN_DIR/plain/$slug/passed ]]; then
    if ! diff -u --label plain "$RUN_DIR/plain/$slug/sig" --label sdx "$CASE_DIR/sig" >"$CASE_DIR/sigdiff" 2>&1; then
      echo "results differ from the plain run:" >"$CASE_DIR/reason"
      cat "$CASE_DIR/sigdiff" >>"$CASE_DIR/reason"
      rc=1
    fi
  fi
  if ((rc == 0)); then
    : >"$CASE_DIR/passed"
    pass "$full"
  else
    local why f
    why=$(cat "$CASE_DIR/reason" 2>/dev/null || echo "exit status $rc")
    for f in "$CASE_DIR"/*.log "$CASE_DIR"/*.err; do
      [[ -s $f ]] || continue
      why+=$'\n'"  --- tail of ${f#"$RUN_DIR"/}"$'\n'"$(tail -n 12 "$f" | tr -d '\r' | cut -c1-300 | sed 's/^/  | /')"
    done
    fail "$full" "$why"
  fi
}
