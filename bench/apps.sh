#!/usr/bin/env bash
# Real programs side by side: kernel TCP loopback vs sdx accelerated (client and server both under
# `sdx run --` with SDX_ACCELERATE=1), in one run.  Each metric is measured APPS_RUNS times (default
# 3) per mode, kernel and sdx runs interleaved (the order flips every round), and the median is
# compared with the same-host issue's target.  Every sdx run is checked against the client's stats
# file: its connections must have been accelerated and at least 99% of the payload must have gone
# over sdx, otherwise the metric is reported INVALID (a silent fallback to TCP is not a result).
#
#   bench/apps.sh                  JSON in build/bench/apps.json, a table on stdout
#   APPS_RUNS=5 APPS_SECONDS=3     runs per mode and metric, seconds per timed run
#   APPS_ONLY="iperf3 redis"       a subset: iperf3 sockperf_pp sockperf_tp redis nginx connrate
#   APPS_SDX=/other/build/bin/sdx  measure another build (e.g. a snapshot while the tree is rebuilt)
#   APPS_KEEP=1                    keep the work folder (programs' output, stats files)
#
# Latency is sockperf's default: half the round trip (one way), in microseconds.  The numbers come
# from a shared 2-core VM: read them as indicative, the ratios measured side by side are what counts.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
# shellcheck source=tests/lib.sh
source tests/lib.sh # ROOT, SDX, port()
# APPS_SDX: another build's launcher (its libsdx.so is ../lib/libsdx.so beside it).
SDX=${APPS_SDX:-$SDX}
LIB=$(dirname "$(dirname "$SDX")")/lib/libsdx.so
OUT=$ROOT/build/bench
mkdir -p "$OUT"
RUNS=${APPS_RUNS:-3}
SECS=${APPS_SECONDS:-3}
ONLY=${APPS_ONLY:-iperf3 sockperf_pp sockperf_tp redis nginx connrate}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/sdx-apps.XXXXXX)
srv= # the server running now, if any
cleanup() {
  [[ -n $srv ]] && kill "$srv" 2>/dev/null
  wait 2>/dev/null
  if [[ -n ${APPS_KEEP:-} ]]; then echo "apps: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x $SDX && -f $LIB ]] || { echo "apps: build/bin/sdx or libsdx.so missing (make)" >&2; exit 2; }

# wrk comes with scripts/deps.sh (make runs it); a machine set up before it was listed there gets it here.
if ! command -v wrk >/dev/null; then
  SUDO=
  [[ $(id -u) != 0 ]] && SUDO=sudo
  echo "apps: installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; } ||
    echo "apps: could not install wrk: the nginx metric is skipped" >&2
fi

# under MODE DIR: sets pre=(...), the prefix that runs a command on kernel TCP (MODE=kernel) or
# under sdx with its stats into DIR (MODE=sdx).  Every part execs the next, so $! of a backgrounded
# "${pre[@]}" CMD is the process that gets the signals (timeout forwards them to CMD).
under() {
  mkdir -p "$2"
  if [[ $1 == sdx ]]; then
    pre=(env SDX_ACCELERATE=1 SDX_STATS=1 "SDX_STATS_FILE=$2/%p.json" timeout -k 5 120 "$SDX" run --)
  else
    pre=(env -u SDX_ACCELERATE -u SDX_STATS -u SDX_STATS_FILE timeout -k 5 120)
  fi
}
# run_under MODE DIR CMD...: CMD in the foreground, see under.
run_under() {
  local pre
  under "$1" "$2"
  shift 2
  "${pre[@]}" "$@"
}

# start_server MODE DIR LOG PORT CMD...: the server in the background, returns once it listens.
start_server() {
  local mode=$1 dir=$2 log=$3 p=$4; shift 4
  local pre
  under "$mode" "$dir"
  "${pre[@]}" "$@" >"$log" 2>&1 &
  srv=$!
  wait_listen "$p" 1000  # servers under a loaded bench may take up to 10 s
}
# stop_server [SIGNAL]: ends the server (timeout forwards the signal) and reaps it.
stop_server() {
  kill "-${1:-TERM}" "$srv" 2>/dev/null
  wait "$srv" 2>/dev/null
  srv=
}

# record METRIC MODE ROUND DIR ERROR JSON_VALUES JSON_PAYLOAD: one line of runs.jsonl.  The payload
# says what the stats must show: {"conns": N, "tx": BYTES} or {"conns": N, "rx": BYTES}.
# load1 is the 1-minute load average when the run ended (other work on the machine shows there).
record() {
  printf '{"metric":"%s","mode":"%s","round":%d,"dir":"%s","error":%s,"values":%s,"expect":%s,"load1":%s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$(cut -d' ' -f1 /proc/loadavg)" >>"$tmp/runs.jsonl"
}
jstr() { $PY -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# ---- 1. iperf3, one stream ----------------------------------------------------------------------
m_iperf3() {
  local mode=$1 r=$2 d=$tmp/iperf3-$1-$2 p; p=$(port)
  if ! start_server "$mode" "$d/srv" "$d.srv" "$p" iperf3 -s -1 -p "$p"; then
    stop_server; record iperf3 "$mode" "$r" "$d/cli" "$(jstr "server did not listen: $(tail -2 "$d.srv")")" '{}' '{}'; return
  fi
  if ! run_under "$mode" "$d/cli" iperf3 -c 127.0.0.1 -p "$p" -t "$SECS" -J >"$d.json" 2>"$d.err"; then
    stop_server; record iperf3 "$mode" "$r" "$d/cli" "$(jstr "iperf3 failed: $(tail -c 300 "$d.json" "$d.err" | tr '\n' ' ')")" '{}' '{}'; return
  fi
  wait "$srv" 2>/dev/null # iperf3 -s -1 ends after its client
  srv=
  local v
  v=$($PY - "$d.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
print(json.dumps({"values": {"gbit_s": round(e["sum_received"]["bits_per_second"] / 1e9, 3)},
                  "expect": {"conns": 1, "tx": e["sum_sent"]["bytes"]}}))
EOF
  ) || { record iperf3 "$mode" "$r" "$d/cli" '"cannot parse iperf3 JSON"' '{}' '{}'; return; }
  record iperf3 "$mode" "$r" "$d/cli" null "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["values"]))' "$v")" \
    "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["expect"]))' "$v")"
}

# ---- 2./3. sockperf ping-pong 64 B and throughput 64 KB (65507 B, sockperf's largest) -----------
m_sockperf() {
  local kind=$1 mode=$2 r=$3 d=$tmp/sockperf-$1-$2-$3 p; p=$(port)
  local metric=sockperf_$kind
  if ! start_server "$mode" "$d/srv" "$d.srv" "$p" sockperf sr --tcp -i 127.0.0.1 -p "$p"; then
    stop_server; record "$metric" "$mode" "$r" "$d/cli" "$(jstr "server did not listen: $(tail -2 "$d.srv")")" '{}' '{}'; return
  fi
  local args
  if [[ $kind == pp ]]; then args=(pp -m 64); else args=(tp -m 65507); fi
  if ! run_under "$mode" "$d/cli" sockperf "${args[@]}" --tcp -i 127.0.0.1 -p "$p" -t "$SECS" >"$d.out" 2>&1; then
    stop_server; record "$metric" "$mode" "$r" "$d/cli" "$(jstr "sockperf failed: $(tail -3 "$d.out" | tr '\n' ' ')")" '{}' '{}'; return
  fi
  stop_server INT
  local v
  v=$($PY - "$kind" "$d.out" <<'EOF'
import json, re, sys
kind, text = sys.argv[1], open(sys.argv[2]).read()
text = re.sub(r"\x1b\[[0-9;]*m", "", text)
if kind == "pp":
    p50 = float(re.search(r"percentile 50\.000 =\s*([\d.]+)", text).group(1))
    p99 = float(re.search(r"percentile 99\.000 =\s*([\d.]+)", text).group(1))
    sent = int(re.search(r"\[Total Run\].*SentMessages=(\d+)", text).group(1))
    print(json.dumps([{"p50_us": p50, "p99_us": p99}, {"conns": 1, "tx": sent * 64}]))
else:
    mbps = float(re.search(r"BandWidth is ([\d.]+) MBps", text).group(1))
    sent = int(re.search(r"Total of (\d+) messages sent", text).group(1))
    print(json.dumps([{"mb_s": mbps}, {"conns": 1, "tx": sent * 65507}]))
EOF
  ) || { record "$metric" "$mode" "$r" "$d/cli" "$(jstr "cannot parse sockperf output: $(tail -3 "$d.out" | tr '\n' ' ')")" '{}' '{}'; return; }
  record "$metric" "$mode" "$r" "$d/cli" null "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0]))' "$v")" \
    "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[1]))' "$v")"
}
m_sockperf_pp() { m_sockperf pp "$@"; }
m_sockperf_tp() { m_sockperf tp "$@"; }

# ---- 4. redis-benchmark SET and GET -------------------------------------------------------------
REDIS_N=${APPS_REDIS_N:-100000}
REDIS_C=50
m_redis() {
  local mode=$1 r=$2 d=$tmp/redis-$1-$2 p; p=$(port)
  if ! start_server "$mode" "$d/srv" "$d.srv" "$p" redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no; then
    stop_server; record redis "$mode" "$r" "$d/cli" "$(jstr "server did not listen: $(tail -2 "$d.srv")")" '{}' '{}'; return
  fi
  if ! run_under "$mode" "$d/cli" redis-benchmark -h 127.0.0.1 -p "$p" -q -n "$REDIS_N" -c "$REDIS_C" -t set,get --csv >"$d.csv" 2>"$d.err"; then
    stop_server; record redis "$mode" "$r" "$d/cli" "$(jstr "redis-benchmark failed: $(tail -3 "$d.err" | tr '\n' ' ')")" '{}' '{}'; return
  fi
  stop_server
  local v
  # The requests are at least 36 (GET) and 45 (SET) bytes: "*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n".
  v=$($PY - "$d.csv" <<'EOF'
import csv, json, sys
rows = {r[0]: r for r in csv.reader(open(sys.argv[1])) if r and r[0] in ("SET", "GET")}
print(json.dumps({"set_rps": float(rows["SET"][1]), "get_rps": float(rows["GET"][1])}))
EOF
  ) || { record redis "$mode" "$r" "$d/cli" "$(jstr "cannot parse redis-benchmark CSV: $(head -c 300 "$d.csv" "$d.err" | tr '\n' ' ')")" '{}' '{}'; return; }
  record redis "$mode" "$r" "$d/cli" null "$v" "{\"conns\": $((2 * REDIS_C)), \"tx\": $((REDIS_N * (36 + 45)))}"
}

# ---- 5. nginx (2 workers) + wrk, keep-alive, a small static file ---------------------------------
NGINX_FILE=1024
m_nginx() {
  local mode=$1 r=$2 d=$tmp/nginx-$1-$2 p; p=$(port)
  command -v wrk >/dev/null || { record nginx "$mode" "$r" "$d/cli" '"wrk is not installed"' '{}' '{}'; return; }
  mkdir -p "$d/www" "$d/tmp"
  head -c "$NGINX_FILE" /dev/urandom >"$d/www/small.bin"
  nginx_conf "$d" "$p" on 10000000
  if ! start_server "$mode" "$d/srv" "$d.srv" "$p" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"; then
    stop_server QUIT; record nginx "$mode" "$r" "$d/cli" "$(jstr "nginx did not listen: $(tail -2 "$d/error.log")")" '{}' '{}'; return
  fi
  if ! run_under "$mode" "$d/cli" wrk -t2 -c50 "-d${SECS}s" "http://127.0.0.1:$p/small.bin" >"$d.out" 2>&1; then
    stop_server QUIT; record nginx "$mode" "$r" "$d/cli" "$(jstr "wrk failed: $(tail -3 "$d.out" | tr '\n' ' ')")" '{}' '{}'; return
  fi
  stop_server QUIT
  local v
  v=$($PY - "$d.out" "$NGINX_FILE" <<'EOF'
import json, re, sys
text, size = open(sys.argv[1]).read(), int(sys.argv[2])
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
n = int(re.search(r"(\d+) requests in", text).group(1))
err = re.search(r"Socket errors:.*|Non-2xx or 3xx responses: \d+", text)
print(json.dumps([{"req_s": rps}, {"conns": 50, "rx": n * size}, err.group(0) if err else None]))
EOF
  ) || { record nginx "$mode" "$r" "$d/cli" "$(jstr "cannot parse wrk output: $(tail -3 "$d.out" | tr '\n' ' ')")" '{}' '{}'; return; }
  local e
  e=$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[2]))' "$v")
  record nginx "$mode" "$r" "$d/cli" "$e" "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0]))' "$v")" \
    "$($PY -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[1]))' "$v")"
}

# ---- 6. connection rate: connect, 64 B request, 64 B answer, close; python at both ends ---------
# The server is tests/accel/churn.py's echo server (one process, nonblocking).
cat >"$tmp/conn_client.py" <<'EOF'
# For SECONDS: connect, send 64 B, read the 64 B echo, close.  Prints {"conns", "conn_s"}.
import json, socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
msg = b"x" * 64
n = 0
t0 = time.monotonic()
end = t0 + secs
while True:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(msg)
    got = 0
    while got < 64:
        b = s.recv(64 - got)
        if not b:
            sys.exit("connection %d: EOF after %d bytes" % (n, got))
        got += len(b)
    s.close()
    n += 1
    if (n & 15) == 0 and time.monotonic() >= end:
        break
el = time.monotonic() - t0
print(json.dumps({"conns": n, "conn_s": round(n / el, 1)}))
EOF
m_connrate() {
  local mode=$1 r=$2 d=$tmp/connrate-$1-$2 p; p=$(port)
  if ! start_server "$mode" "$d/srv" "$d.srv" "$p" "$PY" "$ROOT/tests/accel/churn.py" server "$p" 0; then
    stop_server; record connrate "$mode" "$r" "$d/cli" "$(jstr "server did not listen: $(tail -2 "$d.srv")")" '{}' '{}'; return
  fi
  if ! run_under "$mode" "$d/cli" "$PY" "$tmp/conn_client.py" "$p" "$SECS" >"$d.out" 2>&1; then
    stop_server; record connrate "$mode" "$r" "$d/cli" "$(jstr "client failed: $(tail -3 "$d.out" | tr '\n' ' ')")" '{}' '{}'; return
  fi
  stop_server
  local n
  n=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["conns"])' "$d.out") ||
    { record connrate "$mode" "$r" "$d/cli" "$(jstr "bad client output: $(tail -3 "$d.out")")" '{}' '{}'; return; }
  record connrate "$mode" "$r" "$d/cli" null "$($PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print(json.dumps({"conn_s": j["conn_s"]}))' "$d.out")" \
    "{\"conns\": $n, \"tx\": $((n * 64))}"
}

# ---- the runs: round by round, every metric, kernel and sdx in alternating order ----------------
: >"$tmp/runs.jsonl"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
for ((r = 1; r <= RUNS; r++)); do
  if ((r % 2)); then order=(kernel sdx); else order=(sdx kernel); fi
  for m in $ONLY; do
    for mode in "${order[@]}"; do
      echo "apps: round $r/$RUNS $m $mode" >&2
      "m_$m" "$mode" "$r"
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - t_start))

# ---- summary: acceleration proof from the stats, medians, ratios, targets -----------------------
$PY - "$tmp/runs.jsonl" "$OUT/apps.json" "$RUNS" "$SECS" "$load_before" "$load_after" "$elapsed" <<'EOF'
import glob, json, os, platform, statistics, sys, time
runs_file, out, nruns, secs, load_before, load_after, elapsed = sys.argv[1:8]
runs = [json.loads(l) for l in open(runs_file)]

# metric key, run field, label, unit, better, target (ratio sdx/kernel), target text
METRICS = [
    ("iperf3", "gbit_s", "iperf3 1 stream", "Gbit/s", "higher", 3.0, ">= 3x"),
    ("sockperf_pp", "p50_us", "sockperf pp 64B p50 (one way)", "us", "lower", 0.2, "<= 0.2x"),
    ("sockperf_pp", "p99_us", "sockperf pp 64B p99 (one way)", "us", "lower", None, "-"),
    ("sockperf_tp", "mb_s", "sockperf tp 65507B", "MB/s", "higher", None, "-"),
    ("redis", "set_rps", "redis-benchmark SET", "req/s", "higher", 1.5, ">= 1.5x"),
    ("redis", "get_rps", "redis-benchmark GET", "req/s", "higher", 1.5, ">= 1.5x"),
    ("nginx", "req_s", "nginx + wrk 1KiB keep-alive", "req/s", "higher", None, "-"),
    ("connrate", "conn_s", "connect+64B+close (python)", "conn/s", "higher", 1.0, ">= 1.0x"),
]

def proof(run):
    """Check an sdx run's client stats: (valid, text)."""
    files = glob.glob(run["dir"] + "/*.json")
    if not files:
        return False, "no stats file"
    acc = tx = rx = ttx = trx = 0
    has_tcp = False
    why = {}
    for f in files:
        try:
            j = json.load(open(f))
        except Exception as e:
            return False, "unreadable stats %s: %s" % (os.path.basename(f), e)
        acc += j.get("sockets", {}).get("accelerated", 0)
        tx += j.get("bytes", {}).get("sdx_tx", 0)
        rx += j.get("bytes", {}).get("sdx_rx", 0)
        if "tcp_tx" in j.get("bytes", {}):  # payload over kernel TCP (newer stats files)
            has_tcp = True
            ttx += j["bytes"]["tcp_tx"]
            trx += j["bytes"].get("tcp_rx", 0)
        for k, v in j.get("fallbacks", {}).items():
            if v:
                why[k] = why.get(k, 0) + v
    exp = run["expect"]
    info = {"accelerated": acc, "sdx_tx": tx, "sdx_rx": rx, "fallbacks": why}
    if has_tcp:
        info.update(tcp_tx=ttx, tcp_rx=trx)
    run["stats"] = info
    problems = []
    if acc < exp.get("conns", 1):
        problems.append("%d of %d connections accelerated" % (acc, exp.get("conns", 1)))
    if "tx" in exp and tx < 0.99 * exp["tx"]:
        problems.append("sdx_tx %d < 99%% of %d" % (tx, exp["tx"]))
    if "rx" in exp and rx < 0.99 * exp["rx"]:
        problems.append("sdx_rx %d < 99%% of %d" % (rx, exp["rx"]))
    if has_tcp and ttx + trx > 0.01 * (tx + rx + ttx + trx):
        problems.append("%d payload bytes over kernel TCP (tcp_tx %d, tcp_rx %d)" % (ttx + trx, ttx, trx))
    if why:
        problems.append("fallbacks " + ", ".join("%s=%d" % kv for kv in sorted(why.items())))
    ok = "accelerated=%d sdx_tx=%d sdx_rx=%d" % (acc, tx, rx) + (" tcp_tx=%d tcp_rx=%d" % (ttx, trx) if has_tcp else "")
    return (not problems), "; ".join(problems) or ok

for r in runs:
    if r["mode"] == "sdx" and r["error"] is None:
        r["accelerated"], r["proof"] = proof(r)

results = []
for key, field, label, unit, better, target, ttext in METRICS:
    mine = [r for r in runs if r["metric"] == key]
    if not mine:
        continue
    res = {"metric": key + "." + field, "label": label, "unit": unit, "better": better,
           "target_ratio": target, "target": ttext}
    problems = []
    for mode in ("kernel", "sdx"):
        ok = [r for r in mine if r["mode"] == mode and r["error"] is None and field in r["values"]]
        res[mode + "_runs"] = [r["values"][field] for r in ok]
        res[mode + "_median"] = statistics.median(res[mode + "_runs"]) if ok else None
        for r in mine:
            if r["mode"] == mode and r["error"] is not None:
                problems.append("%s round %d: %s" % (mode, r["round"], r["error"]))
    res["sdx_stats"] = [dict(round=r["round"], accelerated=r.get("accelerated"), proof=r.get("proof"))
                        for r in mine if r["mode"] == "sdx" and r["error"] is None]
    invalid = [s for s in res["sdx_stats"] if not s["accelerated"]]
    k, s = res["kernel_median"], res["sdx_median"]
    res["ratio"] = round(s / k, 3) if k and s is not None else None
    if invalid:
        res["result"] = "INVALID"
        problems += ["sdx round %d not accelerated: %s" % (x["round"], x["proof"]) for x in invalid]
    elif problems or res["ratio"] is None:
        res["result"] = "ERROR"
    elif target is None:
        res["result"] = "n/a"
    else:
        met = res["ratio"] >= target if better == "higher" else res["ratio"] <= target
        res["result"] = "PASS" if met else "FAIL"
    res["problems"] = problems
    results.append(res)

doc = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "kernel": platform.release(),
    "nproc": os.cpu_count(),
    "loadavg_before": load_before, "loadavg_after": load_after,
    "elapsed_s": int(elapsed),
    "runs_per_mode": int(nruns), "seconds_per_run": float(secs),
    "latency": "one way (half round trip), sockperf's default",
    "modes": {"kernel": "plain programs on kernel TCP loopback",
              "sdx": "client and server under `sdx run --` with SDX_ACCELERATE=1"},
    "metrics": results,
    "runs": runs,
}
json.dump(doc, open(out, "w"), indent=2)

def fmt(v):
    if v is None:
        return "-"
    return "%.2f" % v if abs(v) < 100 else "%.0f" % v
print("apps: kernel TCP loopback vs sdx accelerated, median of %s runs each, %ss per run (%s cores, kernel %s, load %s -> %s, %ss)"
      % (nruns, secs, doc["nproc"], doc["kernel"], load_before, load_after, elapsed))
hdr = ("metric", "unit", "kernel", "sdx", "sdx/kernel", "target", "result")
rows = [(r["label"], r["unit"], fmt(r["kernel_median"]), fmt(r["sdx_median"]),
         "-" if r["ratio"] is None else "%.2fx" % r["ratio"], r["target"], r["result"]) for r in results]
w = [max(len(str(x[i])) for x in [hdr] + rows) for i in range(len(hdr))]
for row in [hdr] + rows:
    print("  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(row)))
for r in results:
    for p in r["problems"]:
        print("  %s: %s" % (r["label"], p))
print("apps: JSON in " + os.path.relpath(out))
EOF
