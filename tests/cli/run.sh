#!/usr/bin/env bash
# The launcher, the configuration front end, the man pages and the shim's outside: exported symbols,
# link dependencies, silence, exec handling, stats and log files.
set -uo pipefail
SUITE=cli
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
T=$(mktemp -d /tmp/sdx-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3

# --- the shim's outside -------------------------------------------------------------------------
expected_exports() {
  { sed -n 's/^SDX_LIBC([^,]*, *\([a-z_0-9]*\),.*/\1/p' preload/libc.def; printf '%s\n' execl execlp execle; } | sort
}
exports_are_exactly_the_interposed_names() {
  diff <(expected_exports) <(nm -D --defined-only "$LIB" | awk '{print $3}' | sort)
}
check "nm -D lists only interposed libc names" exports_are_exactly_the_interposed_names

no_heavy_links() {
  local deps; deps=$(readelf -d "$LIB" | grep NEEDED)
  echo "$deps"
  ! grep -Eq 'fabric|ibverbs|rdmacm|stdc\+\+|libfmt|libgcc_s' <<<"$deps"
}
check "libsdx.so links no transport, C++ or fmt library" no_heavy_links

silent() {
  local out err
  out=$(LD_PRELOAD=$LIB sh -c 'echo hello' 2>"$T/err")
  [[ $out == hello && ! -s $T/err ]] || { echo "stdout=[$out] stderr=[$(cat "$T/err")]"; return 1; }
}
check "the shim prints nothing" silent

# --- launcher basics ----------------------------------------------------------------------------
check "sdx --version" bash -c "'$SDX' --version | grep -Eq '^sdx [0-9]+\.[0-9]+\.[0-9]+$'"
help_lists_every_option() {
  local help; help=$("$SDX" --help)
  for name in $(sed -n 's/^SDX_OPTION(\([a-z_0-9]*\),.*/\1/p' conf/options.def); do
    grep -q "^  $name " <<<"$help" || { echo "missing $name"; return 1; }
  done
}
check "sdx --help lists every option of the table" help_lists_every_option
check "sdx without arguments is a usage error (2)" bash -c "'$SDX' >/dev/null 2>&1; [[ \$? == 2 ]]"
check "sdx run without a command is a usage error (2)" bash -c "'$SDX' run -v >/dev/null 2>&1; [[ \$? == 2 ]]"
check "sdx run of a missing program exits 127" bash -c "'$SDX' run -- /nonexistent/prog 2>/dev/null; [[ \$? == 127 ]]"
check "sdx run passes the exit status through" bash -c "'$SDX' run -- sh -c 'exit 42'; [[ \$? == 42 ]]"
run_sets_preload() {
  local v; v=$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 "$SDX" run -- printenv LD_PRELOAD)
  [[ $v == "$LIB:/lib/x86_64-linux-gnu/libc.so.6" ]] || { echo "LD_PRELOAD=$v"; return 1; }
}
check "sdx run puts libsdx.so first in LD_PRELOAD" run_sets_preload

verbose_lists_non_defaults() {
  local err; err=$("$SDX" run -p latency -v -o credits=64 -- true 2>&1 >/dev/null)
  grep -q "credits = 64 (flag -o credits=64)" <<<"$err" && grep -q "spin = 200us (profile latency)" <<<"$err" &&
    ! grep -q "mr_cache_max" <<<"$err" || { echo "$err"; return 1; }
}
check "sdx run -v prints the non-default options and their sources" verbose_lists_non_defaults

# --- configuration errors -----------------------------------------------------------------------
cat >"$T/good.conf" <<'CONF'
# a good file
profile = throughput
spin = 20us
use tcp  client *            10.0.0.0/8:*
use sdx  server redis-server *:6379
use both *      *            [::1]:8000-8100
CONF
printf 'spin = 20us\ncredits = 8\nbuf_size =  12Q\n' >"$T/bad.conf"

check "check-config accepts a good file" bash -c "'$SDX' check-config '$T/good.conf' | grep -q 'ok (2 settings, 3 rules)'"
bad_config_located() {
  local err rc
  err=$("$SDX" check-config "$T/bad.conf" 2>&1); rc=$?
  [[ $rc == 2 && $err == "$T/bad.conf:3:13: found '12Q', expected a size between 4K and 16M, like 64K or 1M for 'buf_size'" ]] ||
    { echo "rc=$rc err=$err"; return 1; }
}
check "check-config names file:line:column, found and expected; exit 2" bad_config_located

run_refuses_bad_config() {
  local rc
  SDX_CONFIG=$T/bad.conf "$SDX" run -- touch "$T/started" 2>"$T/err"; rc=$?
  [[ $rc == 2 && ! -e $T/started ]] && grep -q "bad.conf:3:13" "$T/err" || { echo "rc=$rc $(cat "$T/err")"; return 1; }
}
check "sdx run with a bad config exits 2 before starting the program" run_refuses_bad_config

run_refuses_bad_env() {
  local rc
  SDX_SPIN=fast "$SDX" run -- touch "$T/started2" 2>"$T/err"; rc=$?
  [[ $rc == 2 && ! -e $T/started2 ]] && grep -q "SDX_SPIN=fast: found 'fast', expected a duration" "$T/err" ||
    { echo "rc=$rc $(cat "$T/err")"; return 1; }
}
check "sdx run with a bad SDX_* value exits 2" run_refuses_bad_env
check "sdx run with a bad -o value exits 2" bash -c "'$SDX' run -o credits=1 -- true 2>/dev/null; [[ \$? == 2 ]]"
check "sdx run with an unknown profile exits 2" bash -c "'$SDX' run -p fastest -- true 2>/dev/null; [[ \$? == 2 ]]"

# A real TCP round trip, to show the application still works while sdx is disabled.
cat >"$T/echo.py" <<'PY'
import socket, threading, hashlib, os
data = os.urandom(1 << 20)
srv = socket.create_server(("127.0.0.1", 0))
def serve():
    c, _ = srv.accept()
    buf = b""
    while len(buf) < len(data):
        buf += c.recv(65536)
    c.sendall(hashlib.sha256(buf).digest()); c.close()
t = threading.Thread(target=serve); t.start()
s = socket.create_connection(srv.getsockname()); s.sendall(data)
digest = s.recv(32); t.join()
print("ok" if digest == hashlib.sha256(data).digest() else "MISMATCH")
PY
bare_preload_bad_config_one_line() {
  local out
  out=$(SDX_CONFIG=$T/bad.conf LD_PRELOAD=$LIB $PY "$T/echo.py" 2>"$T/err") || { echo "exit $?"; return 1; }
  [[ $out == ok ]] || { echo "stdout=$out"; return 1; }
  [[ $(wc -l <"$T/err") == 1 ]] && grep -q "^sdx: $T/bad.conf:3:13: found '12Q'.*; sdx is disabled in this process$" "$T/err" ||
    { echo "stderr:"; cat "$T/err"; return 1; }
}
check "bare LD_PRELOAD + bad config: one line on stderr, app runs" bare_preload_bad_config_one_line
bare_preload_bad_env_one_line() {
  local out
  out=$(SDX_CREDITZ=3 LD_PRELOAD=$LIB $PY "$T/echo.py" 2>"$T/err") && [[ $out == ok && $(wc -l <"$T/err") == 1 ]] ||
    { echo "out=$out"; cat "$T/err"; return 1; }
}
check "bare LD_PRELOAD + unknown SDX_ variable: one line, app runs" bare_preload_bad_env_one_line

config_shows_sources() {
  local out; out=$(SDX_CONFIG=$T/good.conf SDX_CREDITS=12 "$SDX" config -o buf_size=8K)
  grep -Eq "^spin += 20us +# $T/good.conf:3$" <<<"$out" &&
    grep -Eq "^credits += 12 +# env SDX_CREDITS$" <<<"$out" &&
    grep -Eq "^buf_size += 8K +# flag -o buf_size=8K$" <<<"$out" &&
    grep -Eq "^zcopy_max_chunk += 4M +# profile throughput$" <<<"$out" &&
    grep -Eq "^mr_cache_max += 256M +# default$" <<<"$out" &&
    grep -q "^use sdx  server redis-server \*:6379 # $T/good.conf:5$" <<<"$out" || { echo "$out"; return 1; }
}
check "sdx config shows every value and its source" config_shows_sources

# --- exec handling ------------------------------------------------------------------------------
exec_inherit() {
  local v; v=$("$SDX" run -- env -u LD_PRELOAD printenv LD_PRELOAD); [[ -z $v ]]
}
check "exec=inherit leaves a cleared LD_PRELOAD cleared" exec_inherit
exec_keep() {
  local v; v=$("$SDX" run -o exec=keep -- env -u LD_PRELOAD -u SDX_EXEC sh -c 'echo "$LD_PRELOAD|$SDX_EXEC"')
  [[ $v == "$LIB|keep" ]] || { echo "got $v"; return 1; }
}
check "exec=keep puts libsdx.so and SDX_* back" exec_keep
exec_drop() {
  local v; v=$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 "$SDX" run -o exec=drop -- sh -c 'exec sh -c "echo \"\$LD_PRELOAD|\${SDX_EXEC-unset}\""')
  [[ $v == "/lib/x86_64-linux-gnu/libc.so.6|unset" ]] || { echo "got $v"; return 1; }
}
check "exec=drop removes libsdx.so and SDX_* from the new program" exec_drop

# --- logs and stats -----------------------------------------------------------------------------
log_file_with_pid() {
  rm -f "$T"/log-*
  SDX_LOG_LEVEL=debug SDX_LOG="$T/log-%p.txt" LD_PRELOAD=$LIB sh -c 'echo $$ > '"$T/pid" 2>"$T/err"
  local pid; pid=$(cat "$T/pid")
  [[ -s $T/log-$pid.txt && ! -s $T/err ]] && grep -q "debug: loaded" "$T/log-$pid.txt" || { ls "$T"; cat "$T/err"; return 1; }
}
check "log=FILE with %p: messages go to the file, none to stderr" log_file_with_pid
stats_file() {
  rm -f "$T"/stats-*
  local out; out=$("$SDX" run -o stats=1 -o "stats_file=$T/stats-%p.json" -- $PY "$T/echo.py") && [[ $out == ok ]] || return 1
  local f; f=$(ls "$T"/stats-*.json) || return 1
  $PY - "$f" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["program"] == "python3", s
assert s["sockets"]["tracked"] == 3, s          # listener, client, accepted
assert s["calls"]["connect"] == 1 and s["calls"].get("accept", 0) + s["calls"].get("accept4", 0) == 1, s
assert sum(s["calls"].get(k, 0) for k in ("send", "sendto", "recv", "recvfrom")) > 0, s
assert s["decisions"]["both"] == 2, s          # listen + connect
PY
}
check "stats=1 writes per-process counters of tracked sockets" stats_file

# --- man pages ----------------------------------------------------------------------------------
man_clean() {
  for page in man/sdx.1 man/sdx.conf.5; do
    local warn; warn=$(LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l "$page" 2>&1 >/dev/null)
    [[ -z $warn ]] || { echo "$page: $warn"; return 1; }
    LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null | grep -q "SDX_SEND_ZCOPY_THRESHOLD" || { echo "$page lacks options"; return 1; }
  done
  # sdx(7): the overview, and the stats schema (every key the shim writes is described there).
  local warn; warn=$(LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l man/sdx.7 2>&1 >/dev/null)
  [[ -z $warn ]] || { echo "man/sdx.7: $warn"; return 1; }
  local text key; text=$(LC_ALL=C.UTF-8 MANWIDTH=200 man -l man/sdx.7 2>/dev/null)
  for key in sdx_tx tcp_rx handshake_timeout other_user created reused attached cached credit_stalls sendsm aborted "Early data"; do
    grep -q -- "$key" <<<"$text" || { echo "man/sdx.7 does not describe $key"; return 1; }
  done
}
check "man pages render without warnings and list the options" man_clean

# --- sdx stats -----------------------------------------------------------------------------------
# A live accelerated pair (sdxperf, both under sdx): `sdx stats` lists both processes, their
# sockets on shm with bytes moving, and the JSON says the same.
stats_lists_live_sockets() {
  local p=$((20000 + RANDOM % 12000)) srv cli i out
  SDX_ACCELERATE=1 "$SDX" run -- "$ROOT/build/bin/sdxperf" -s -1 -p "$p" >"$T/perf-srv" 2>&1 &
  srv=$!
  for ((i = 0; i < 300; i++)); do [[ -n $(ss -ltnH "sport = :$p") ]] && break; sleep 0.01; done
  SDX_ACCELERATE=1 "$SDX" run -- "$ROOT/build/bin/sdxperf" -c 127.0.0.1 -p "$p" -t 3 >"$T/perf-cli" 2>&1 &
  cli=$!
  # Until the client's connection shows up with bytes on shm (at most 3 s).
  for ((i = 0; i < 300; i++)); do
    out=$("$SDX" stats -p "$cli" --json 2>/dev/null)
    "$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if any(s["path"]=="shm" and s["sdx_tx_bcopy"]+s["sdx_tx_zcopy"]>0 for p in j for s in p["live"]) else 1)' "$out" 2>/dev/null && break
    sleep 0.01
  done
  "$SDX" stats >"$T/stats.txt"
  kill "$cli" "$srv" 2>/dev/null
  wait "$cli" "$srv" 2>/dev/null
  cat "$T/stats.txt"
  "$PY" - "$out" "$cli" <<'PYEOF' || return 1
import json, sys
procs = json.loads(sys.argv[1])
assert len(procs) == 1 and procs[0]["pid"] == int(sys.argv[2]), procs
p = procs[0]
shm = [s for s in p["live"] if s["path"] == "shm"]
assert shm, p["live"]
assert p["sockets"]["accelerated"] >= 1 and p["bytes"]["sdx_tx"] > 0, p
assert shm[0]["peer"].startswith("127.0.0.1:"), shm[0]
PYEOF
  grep -Eq "^pid $srv sdxperf: .* 1 accelerated" "$T/stats.txt" && grep -Eq "^pid $cli sdxperf" "$T/stats.txt" && grep -Eq "^ +[0-9]+ shm +127\.0\.0\.1:$p" "$T/stats.txt"
}
check "sdx stats lists live accelerated sockets of both processes (table and JSON)" stats_lists_live_sockets
check "sdx stats -p of a process without sdx: exit 1 and says so" bash -c "'$SDX' stats -p 1 2>&1 >/dev/null | grep -q 'not running under sdx'; [[ \${PIPESTATUS[0]} == 1 ]]"
check "sdx stats with a bad argument is a usage error (2)" bash -c "'$SDX' stats --bogus >/dev/null 2>&1; [[ \$? == 2 ]]"

summary
