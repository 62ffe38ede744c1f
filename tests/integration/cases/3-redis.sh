# shellcheck shell=bash
# redis-server (no persistence) with redis-benchmark (plain and pipelined) and redis-cli values.

redis_start() {
  RD_PORT=$(port)
  start_server redis-server redis-server --port "$RD_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$CASE_DIR" --daemonize no --logfile '' --loglevel notice
  RD_SRV=$SRV_PID
  wait_port "$RD_PORT" "$RD_SRV"
}

redis_stop() {
  local out
  out=$(cl client redis-cli -h 127.0.0.1 -p "$RD_PORT" shutdown nosave 2>&1) ||
    die "redis-cli shutdown nosave exited with status $? ($out)"
  [[ -z $out ]] || die "redis-cli shutdown nosave said: $out"
  stop_server "$RD_SRV" none
  ((SRV_RC == 0)) || die "redis-server exited with status $SRV_RC"
}

# redis_bench ARGS...: every test of -t reports a positive requests/second.
redis_bench() {
  local tests=$1; shift
  cl client redis-benchmark -h 127.0.0.1 -p "$RD_PORT" -t "$tests" -q "$@" >bench.log 2>bench.err ||
    die "redis-benchmark exited with status $?"
  local res
  res=$("$PY" - bench.log bench.err "$tests" <<'PYEOF'
import re, sys
out = open(sys.argv[1], errors="replace").read().replace("\r", "\n")
err = open(sys.argv[2], errors="replace").read()
want = [t.upper() for t in sys.argv[3].split(",")]
if re.search(r"error|fail|refused|closed", out + err, re.I):
    sys.exit("redis-benchmark reports an error")
got = {}
for line in out.splitlines():
    m = re.match(r"^([A-Z_]+)(?: \([^)]*\))?: ([0-9.]+) requests per second", line.strip())
    if m:
        got[m[1]] = float(m[2])
if sorted(got) != sorted(want):
    sys.exit(f"tests reported {sorted(got)}, expected {sorted(want)}")
bad = [t for t, r in got.items() if r <= 0]
if bad:
    sys.exit(f"no requests/second for {bad}")
print(" ".join(f"{t}={got[t]:.0f}/s" for t in want))
PYEOF
) || die "$res"
  note "$res"
  sig "benchmark $tests $*: every test reports requests/second > 0"
}

case_redis_bench() {
  redis_start
  redis_bench set,get,lpush,lpop -n 20000
  # The server really holds what SET/LPUSH wrote (redis-benchmark uses key:__rand_int__ -> 1 key
  # without -r, and one list).
  local keys
  keys=$(cl client redis-cli -h 127.0.0.1 -p "$RD_PORT" dbsize) || die "redis-cli dbsize failed"
  [[ $keys =~ ^[0-9]+$ ]] && ((keys >= 1)) || die "dbsize after the benchmark: '$keys'"
  sig "dbsize > 0 after the benchmark"
  redis_stop
  sig "exit benchmark 0 server 0"
  expect_stats client redis-benchmark
  expect_stats server redis-server
}

case_redis_bench_pipelined() {
  redis_start
  redis_bench set,get,lpush,lpop -n 100000 -P 16
  redis_stop
  sig "exit benchmark 0 server 0"
  expect_stats client redis-benchmark
  expect_stats server redis-server
}

# SET from stdin (-x, binary safe), GET with --raw (value + "\n"), STRLEN; sha256 compared.
redis_roundtrip() {
  local key=$1 file=$2 out
  out=$(cl client redis-cli -h 127.0.0.1 -p "$RD_PORT" -x SET "$key" <"$file") ||
    die "redis-cli SET $key exited with status $?"
  [[ $out == OK ]] || die "SET $key answered '$out'"
  cl client redis-cli -h 127.0.0.1 -p "$RD_PORT" --raw GET "$key" >"$key.raw" ||
    die "redis-cli GET $key exited with status $?"
  # --raw appends one newline to the value.
  [[ $(tail -c 1 "$key.raw" | od -An -tx1 | tr -d ' ') == 0a ]] || die "GET $key: output does not end with a newline"
  head -c -1 "$key.raw" >"$key.got"
  same_file "GET $key" "$key.got" "$file"
  out=$(cl client redis-cli -h 127.0.0.1 -p "$RD_PORT" STRLEN "$key") || die "redis-cli STRLEN failed"
  [[ $out == "$(stat -c %s "$file")" ]] || die "STRLEN $key = '$out', file has $(stat -c %s "$file") bytes"
  sig "$key: $(stat -c %s "$file") bytes, sha256 $(sha "$file") round-trips"
}

case_redis_cli() {
  redis_start
  redis_roundtrip v4k "$DATA/www/value4k.bin"
  redis_roundtrip v1m "$DATA/www/meg.bin"
  redis_roundtrip v10m "$DATA/www/big.bin"
  redis_stop
  sig "exit server 0"
  expect_stats client redis-cli
  expect_stats server redis-server
}

register "redis-benchmark -t set,get,lpush,lpop" case_redis_bench
register "redis-benchmark -P 16" case_redis_bench_pipelined
register "redis-cli SET/GET 4K, 1M, 10M values" case_redis_cli
