# shellcheck shell=bash
# sdxperf (examples/sdxperf.cpp), the project's own iperf-style tool: the receiver checks every byte
# (a function of seed, stream and offset), with random write/read sizes from 1 byte to 8 MiB,
# reverse with parallel streams, non-blocking sockets (EAGAIN + poll paths), and ping-pong. One
# `sdxperf -s -1` server per run: it exits 0 only if every stream of the client's session went right.
SDXPERF=$ROOT/build/bin/sdxperf
SDXPERF_SEED=20240611   # fixed: the same data and call sizes in both modes

# need_calls ROLE CALL...: (sdx mode) the shim counted every CALL (each one, not just any) made by
# ROLE's sdxperf on its sockets.
need_calls() {
  local role=$1 c; shift
  for c in "$@"; do expect_stats "$role" sdxperf --need-calls "$c"; done
}

# sdxperf_run NAME STREAMS BYTES CLIENT-CALLS SERVER-CALLS ARGS...: a -1 server and one client (ARGS,
# --verify --json); both exit 0, the client's JSON reports STREAMS streams, exactly BYTES bytes,
# verified, no errors, and the server verified (or, for -R, got a verified result for) each stream.
# CLIENT-CALLS, SERVER-CALLS: space-separated data calls each side must make (checked in sdx mode).
sdxperf_run() {
  local name=$1 streams=$2 bytes=$3 ccalls=$4 scalls=$5 p; shift 5
  [[ -x $SDXPERF ]] || die "$SDXPERF missing: build it (make build/bin/sdxperf)"
  p=$(port)
  start_server "$name-server" "$SDXPERF" -s -1 -p "$p"
  local srv=$SRV_PID
  wait_port "$p" "$srv"
  cl client "$SDXPERF" -c 127.0.0.1 -p "$p" --seed "$SDXPERF_SEED" --verify --json "$@" >"$name.json" 2>"$name.err" ||
    die "sdxperf client ($*) exited with status $?: $(head -c 600 "$name.err")"
  stop_server "$srv" none   # -1: the server exits after the session
  ((SRV_RC == 0)) || die "sdxperf server exited with status $SRV_RC"
  local res
  res=$("$PY" - "$name.json" "$name-server.log" "$streams" "$bytes" <<'PYEOF'
import json, re, sys
cfile, sfile, streams, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
try:
    c = json.load(open(cfile))
except Exception as e:
    sys.exit(f"client JSON unreadable: {e}")
if c["errors"] != 0 or c["verified"] is not True:
    sys.exit(f"client: errors {c['errors']}, verified {c['verified']}")
if c["streams"] != streams or c["bytes"] != want:
    sys.exit(f"client: {c['streams']} streams, {c['bytes']} bytes; expected {streams} streams, {want} bytes")
if not c["seconds"] > 0:
    sys.exit(f"client: seconds {c['seconds']}")
extra = ""
if c["mode"] == "pingpong":
    lat = [c[k] for k in ("p50_us", "p90_us", "p99_us", "max_us")]
    if not (0 < lat[0] <= lat[1] <= lat[2] <= lat[3]):
        sys.exit(f"pingpong: RTT/2 percentiles not increasing and positive: {lat}")
    extra = f" round_trips {c['round_trips']} p50/p90/p99/max {lat} us"
s = open(sfile).read()
ok = re.findall(r"^sdxperf: \S+ session \S+ stream \d+/(\d+) .*, verified(?: \(nonblock: \d+ waits in poll\))?$", s, re.M)
if len(ok) != streams or any(int(n) != streams for n in ok):
    sys.exit(f"server: {len(ok)} verified stream line(s), expected {streams}")
if not re.search(rf"^sdxperf: session \S+: {streams} of {streams} streams finished, all ok$", s, re.M):
    sys.exit("server: no 'all ok' session line")
print(f"{c['mode']} bytes {c['bytes']} in {c['seconds']:.3f} s = {c['gbit_per_s']:.2f} Gbit/s{extra}"
      f" would_block {c['would_block']}")
PYEOF
) || die "$res"
  note "$name: $res"
  sig "$name: $streams stream(s), $bytes bytes, verified by the receiver, server saw $streams verified"
  sig "$name: exit client 0 server 0"
  # shellcheck disable=SC2086  # word lists
  need_calls client $ccalls
  # shellcheck disable=SC2086
  need_calls server $scalls
}

# The client sends with send(), the server receives with recv() (and both send/recv the handshake).
case_sdxperf_sizes() { sdxperf_run sizes 1 $((256 << 20)) "send recv" "recv send" --sizes 1-8M -n 256M; }
# The server sends: 4 connections of 64 MiB each, at once.
case_sdxperf_reverse() { sdxperf_run reverse 4 $((256 << 20)) "send recv" "recv send" -R -P 4 -n 256M; }
# O_NONBLOCK at both ends: EAGAIN waits in poll(). How often that happens depends on timing, so it is
# not a signature line; the note has the client's count ("would_block").
case_sdxperf_nonblock() {
  sdxperf_run nonblock 1 $((128 << 20)) "send recv" "recv send" --nonblock --sizes 1-1M -n 128M
}
# 20000 round trips of 64 bytes; the byte count covers both directions.
case_sdxperf_pingpong() {
  sdxperf_run pingpong 1 $((2 * 20000 * 64)) "send recv" "recv send" -m pingpong -k 20000 -l 64
}

register "sdxperf --verify --sizes 1-8M -n 256M" case_sdxperf_sizes
register "sdxperf --verify -R -P 4 -n 256M" case_sdxperf_reverse
register "sdxperf --verify --nonblock --sizes 1-1M -n 128M" case_sdxperf_nonblock
register "sdxperf --verify pingpong -k 20000 -l 64" case_sdxperf_pingpong
