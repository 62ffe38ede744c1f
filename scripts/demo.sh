#!/usr/bin/env bash
# The demo: iperf3 over loopback, kernel TCP and under sdx, side by side, with sdx's own counters
# saying which path carried the bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
SDX=build/bin/sdx
RUNS=${RUNS:-3}
SECS=${SECS:-3}
T=$(mktemp -d /tmp/sdx-demo.XXXXXX)
server=
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

wait_listen() {
  for _ in $(seq 200); do ss -ltnH "sport = :$1" | grep -q . && return 0; read -rt 0.05 <> <(:) || true; done
  echo "demo: server did not start listening on port $1" >&2; return 1
}

run_mode() {  # mode -> prints median Gbit/s
  local mode=$1 pre=() results=()
  [[ $mode == sdx ]] && pre=("$SDX" run -o accelerate=1 -o stats=1 -o "stats_file=$T/stats-%p.json" --)
  "${pre[@]}" iperf3 -s -p "$port" -1 >/dev/null 2>&1 & server=$!
  for i in $(seq "$RUNS"); do
    if ((i > 1)); then "${pre[@]}" iperf3 -s -p "$port" -1 >/dev/null 2>&1 & server=$!; fi
    wait_listen "$port"
    "${pre[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J >"$T/$mode-$i.json"
    wait "$server" || true; server=
    results+=("$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$T/$mode-$i.json")")
  done
  echo "${results[*]}" >"$T/$mode.runs"
  printf "%s\n" "${results[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'
}

echo "sdx demo: iperf3 -c 127.0.0.1 -t $SECS, median of $RUNS runs each"
tcp=$(run_mode tcp)
sdx=$(run_mode sdx)
echo "  kernel TCP : $tcp Gbit/s   (runs: $(cat "$T/tcp.runs"))"
echo "  under sdx  : $sdx Gbit/s   (runs: $(cat "$T/sdx.runs"))"
/usr/bin/python3 - "$T" "$tcp" "$sdx" <<'PY'
import glob, json, sys
d, tcp, sdx = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tracked = accel = 0
for f in glob.glob(d + "/stats-*.json"):
    s = json.load(open(f)); tracked += s["sockets"]["tracked"]; accel += s["sockets"]["accelerated"]
print(f"  ratio sdx/TCP: {sdx / tcp:.2f}")
print(f"  sdx counters: {tracked} TCP sockets tracked, {accel} accelerated")
if accel == 0:
    sys.exit("  no socket was accelerated: both iperf3 ends stayed on kernel TCP (see sdx stats, sdx(7))")
PY
