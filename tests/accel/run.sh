#!/usr/bin/env bash
# Acceleration suite: real programs, both ends under `sdx run` with accelerate=1, on loopback.
# Each case checks the program's own result (exact bytes where the program can tell) AND the
# shim's stats: the connections were accelerated and at least 99% of the payload went over
# shared memory, so a silent fallback to TCP fails the case.  Network namespaces stand in for other
# hosts: an address of a namespace's own interface is accelerated there, not from another one.
#
# sshd re-executes itself for every connection and hands it between privilege-separated processes:
# the case proves exec handover and fork handoffs carry the stream.  A case also fails when more
# than 1% of the payload went over kernel TCP (the stats count it).
# Ends with "accel: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
SUITE=accel
# shellcheck source=tests/lib.sh
source tests/lib.sh
PERF=$ROOT/build/bin/sdxperf
tmp=$(mktemp -d /tmp/sdx-accel.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
export SDX_ACCELERATE=1 SDX_STATS=1

# sdx_env DIR: run the rest under sdx with stats into DIR.
sdxrun() {
  local dir=$1; shift
  mkdir -p "$dir"
  SDX_STATS_FILE="$dir/%p.json" timeout -k 5 60 "$SDX" run -- "$@"
}

# accelerated DIR MIN_BYTES [rx]: the processes whose stats are in DIR accelerated sockets and sent
# (with rx: received) at least MIN_BYTES over sdx, which is at least 99% of the payload.
accelerated() {
  python3 - "$1" "$2" "${3:-tx}" <<'EOF'
import glob, json, sys
d, need, way = sys.argv[1], int(sys.argv[2]), sys.argv[3]
acc = tx = tcp = 0
why = {}
files = glob.glob(d + "/*.json")
if not files:
    sys.exit("no stats files in " + d)
for f in files:
    j = json.load(open(f))
    acc += j["sockets"].get("accelerated", 0)
    tx += j.get("bytes", {}).get("sdx_" + way, 0)
    tcp += j.get("bytes", {}).get("tcp_" + way, 0)
    for k, v in j.get("fallbacks", {}).items():
        if v:
            why[k] = why.get(k, 0) + v
reasons = " (fallbacks: %s)" % ", ".join("%s=%d" % kv for kv in sorted(why.items())) if why else ""
if acc == 0:
    sys.exit("no socket was accelerated (silent fallback to TCP)" + reasons)
if tcp > tx // 100:
    sys.exit("%d payload bytes went over kernel TCP against %d over sdx (more than 1%%)%s" % (tcp, tx, reasons))
if tx < need:
    sys.exit("only %d bytes went over sdx, expected at least %d (99%% of the payload)%s" % (tx, need, reasons))
print("accelerated=%d sdx_%s=%d" % (acc, way, tx))
EOF
}

# sdxperf with --verify: every byte checked by the receiver; both ends must exit 0.
perf_case() {
  local name=$1 bytes=$2; shift 2
  local d=$tmp/$name p; p=$(port)
  sdxrun "$d/srv" "$PERF" -s -1 -p "$p" >"$d.srv" 2>&1 &
  local srv=$!
  wait_listen "$p" || { fail "$name" "server did not listen: $(tail -3 "$d.srv")"; return; }
  if ! sdxrun "$d/cli" "$PERF" -c 127.0.0.1 -p "$p" --verify --json "$@" >"$d.cli" 2>&1; then
    fail "$name" "client failed: $(tail -3 "$d.cli")"
    kill "$srv" 2>/dev/null
    return
  fi
  wait "$srv" || { fail "$name" "server failed: $(tail -3 "$d.srv")"; return; }
  grep -q '"verified":true' "$d.cli" || { fail "$name" "not verified: $(head -c 300 "$d.cli")"; return; }
  local why
  why=$(accelerated "$d/cli" "$bytes" 2>&1) || why=$(accelerated "$d/srv" "$bytes" 2>&1) || { fail "$name" "$why"; return; }
  pass "$name ($why)"
}

mkdir -p "$tmp"
if [[ ! -x $PERF || ! -f $LIB ]]; then
  fail "build" "build/bin/sdxperf or libsdx.so missing (make)"
  summary
  exit 1
fi

perf_case stream-random-sizes $(((256 << 20) * 99 / 100)) -n 256M --sizes 1-8M
perf_case stream-reverse-2 $(((256 << 20) * 99 / 100)) -n 256M -R -P 2
perf_case stream-nonblocking $(((128 << 20) * 99 / 100)) -n 128M --nonblock --sizes 1-1M
perf_case pingpong-64 1200000 -m pingpong -k 20000 -l 64

# iperf3 (select + read/write), forward, reverse and sendfile.
for variant in "" "-R" "-Z" "-P 4"; do
  name="iperf3${variant:+ $variant}"
  d=$tmp/iperf3${variant// /} p=$(port)
  sdxrun "$d/srv" iperf3 -s -1 -p "$p" >"$d.srv" 2>&1 &
  srv=$!
  wait_listen "$p" || { fail "$name" "server did not listen: $(tail -3 "$d.srv")"; continue; }
  if ! sdxrun "$d/cli" iperf3 -c 127.0.0.1 -p "$p" -n 512M $variant >"$d.cli" 2>&1; then
    fail "$name" "client failed: $(tail -3 "$d.cli")"
    continue
  fi
  wait "$srv"
  side=cli
  [[ $variant == -R ]] && side=srv
  if why=$(accelerated "$d/$side" $((507 << 20)) 2>&1); then pass "$name ($why)"; else fail "$name" "$why"; fi
done

# sockperf: ping-pong (blocking sendto/recvfrom) and throughput, TCP.
for mode in pp tp; do
  d=$tmp/sockperf-$mode p=$(port)
  sdxrun "$d/srv" sockperf sr --tcp -i 127.0.0.1 -p "$p" >"$d.srv" 2>&1 &
  srv=$!
  wait_listen "$p" || { fail "sockperf $mode" "server did not listen: $(tail -3 "$d.srv")"; kill "$srv"; continue; }
  size=64
  [[ $mode == tp ]] && size=65507
  if sdxrun "$d/cli" sockperf "$mode" --tcp -i 127.0.0.1 -p "$p" -t 2 -m "$size" >"$d.cli" 2>&1; then
    if why=$(accelerated "$d/cli" 100000 2>&1); then pass "sockperf $mode ($why)"; else fail "sockperf $mode" "$why"; fi
  else
    fail "sockperf $mode" "client failed: $(tail -3 "$d.cli")"
  fi
  kill "$srv" 2>/dev/null
  wait "$srv" 2>/dev/null
done

# redis: SET and GET of exact values through redis-cli, then redis-benchmark.
d=$tmp/redis p=$(port)
sdxrun "$d/srv" redis-server --port "$p" --save '' --appendonly no >"$d.srv" 2>&1 &
srv=$!
if wait_listen "$p"; then
  head -c 1048576 /dev/urandom | base64 -w0 >"$tmp/value"
  if sdxrun "$d/cli" redis-cli -p "$p" -x SET big <"$tmp/value" >/dev/null &&
    sdxrun "$d/cli" redis-cli -p "$p" --raw GET big >"$tmp/got" &&
    cmp -s <(tr -d '\n' <"$tmp/got") "$tmp/value"; then
    if why=$(accelerated "$d/cli" 1000000 2>&1); then pass "redis-cli SET/GET 1 MiB ($why)"; else fail "redis-cli" "$why"; fi
  else
    fail "redis-cli" "value differs or redis-cli failed"
  fi
  if sdxrun "$d/bench" redis-benchmark -p "$p" -q -n 20000 -c 20 -t set,get >"$d.bench" 2>&1; then
    if why=$(accelerated "$d/bench" 400000 2>&1); then pass "redis-benchmark ($why)"; else fail "redis-benchmark" "$why"; fi
  else
    fail "redis-benchmark" "$(tail -3 "$d.bench")"
  fi
else
  fail "redis" "server did not listen"
fi
kill "$srv" 2>/dev/null
wait "$srv" 2>/dev/null

# nginx (2 workers, epoll edge-triggered) and curl: keep-alive (every file through one
# connection) and one connection per request; every byte compared.
d=$tmp/nginx p=$(port)
mkdir -p "$d/www" "$d/tmp"
for n in 1 1000 65536 100000 1048576 3000000 8388608; do head -c "$n" /dev/urandom >"$d/www/f$n.bin"; done
for sendfile in off on; do
  nginx_conf "$d" "$p" "$sendfile" 1000
  rm -rf "$d/srv" "$d/cli"
  sdxrun "$d/srv" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d.srv" 2>&1 &
  srv=$!
  name="nginx sendfile $sendfile + curl"
  if ! wait_listen "$p"; then fail "$name" "nginx did not listen: $(tail -3 "$d/error.log")"; kill "$srv"; continue; fi
  urls=() outs=() total=0
  for f in "$d"/www/*.bin; do
    b=$(basename "$f")
    urls+=("http://127.0.0.1:$p/$b") outs+=(-o "$d/got-$b")
    total=$((total + $(stat -c %s "$f")))
  done
  ok=1
  # Keep-alive: one curl, one connection, every file, three times over.
  for round in 1 2 3; do
    sdxrun "$d/cli" curl -sS --max-time 30 "${outs[@]}" "${urls[@]}" >"$d.cli" 2>&1 || { ok=0; fail "$name" "keep-alive round $round: $(tail -3 "$d.cli")"; break; }
    for f in "$d"/www/*.bin; do cmp -s "$f" "$d/got-$(basename "$f")" || { ok=0; fail "$name" "keep-alive: $(basename "$f") differs"; break 2; }; done
  done
  # One connection per request.
  if ((ok)); then
    for f in "$d"/www/*.bin; do
      b=$(basename "$f")
      sdxrun "$d/cli" curl -sS --max-time 30 -o "$d/got-$b" "http://127.0.0.1:$p/$b" >"$d.cli" 2>&1 && cmp -s "$f" "$d/got-$b" ||
        { ok=0; fail "$name" "per-request $b: $(tail -3 "$d.cli")"; break; }
    done
  fi
  kill -QUIT "$srv"
  wait "$srv"
  if ((ok)); then
    if why=$(accelerated "$d/srv" $((total * 4 * 99 / 100)) 2>&1); then pass "$name ($why)"; else fail "$name" "$why"; fi
  fi
done

# sshd + scp: sshd re-executes itself with the accepted connection (handover across exec), and
# its privilege-separated children take the stream over one after the other (handoffs after
# fork).  256 MiB up and down, compared.
d=$tmp/ssh p=$(port)
mkdir -p "$d" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$d/id"
cp "$d/id.pub" "$d/authorized_keys"
cat >"$d/sshd_config" <<CONF
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
sdxrun "$d/srv" /usr/sbin/sshd -D -e -f "$d/sshd_config" -p "$p" >"$d.srv" 2>&1 &
srv=$!
if wait_listen "$p"; then
  head -c $((256 << 20)) /dev/urandom >"$d/big"
  sshopt=(-F /dev/null -i "$d/id" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
  if sdxrun "$d/up" scp -q "${sshopt[@]}" -P "$p" "$d/big" "root@127.0.0.1:$d/big.up" >"$d.up" 2>&1 && cmp -s "$d/big" "$d/big.up"; then
    if why=$(accelerated "$d/up" $(((256 << 20) * 99 / 100)) 2>&1); then pass "scp 256 MiB up through sshd ($why)"; else fail "scp up" "$why"; fi
  else
    fail "scp up" "scp failed or the copy differs: $(tail -3 "$d.up") $(tail -3 "$d.srv")"
  fi
  if sdxrun "$d/down" ssh "${sshopt[@]}" -p "$p" root@127.0.0.1 cat "$d/big" >"$d/big.down" 2>"$d.down" && cmp -s "$d/big" "$d/big.down"; then
    if why=$(accelerated "$d/down" $(((256 << 20) * 99 / 100)) rx 2>&1); then pass "ssh cat 256 MiB down through sshd ($why)"; else fail "ssh cat down" "$why"; fi
  else
    fail "ssh cat down" "ssh failed or the copy differs: $(tail -3 "$d.down") $(tail -3 "$d.srv")"
  fi
else
  fail "sshd" "sshd did not listen: $(tail -3 "$d.srv")"
fi
kill "$srv" 2>/dev/null
wait "$srv" 2>/dev/null

# Connection churn: 300 connections one after the other, each echoing a random amount.  Besides
# the bytes, the stats must show that the connections reused their shared memory instead of
# setting up and tearing down a segment each (verbs/shm_pool.hpp): what makes short connections
# cheap.
churn_case() {
  local d=$tmp/churn p n=300 srv why seg
  p=$(port)
  sdxrun "$d/srv" python3 "$ROOT/tests/accel/churn.py" server "$p" "$n" >"$d.srv" 2>&1 &
  srv=$!
  wait_listen "$p" || { fail "churn" "server did not listen: $(tail -3 "$d.srv")"; kill "$srv"; return; }
  if ! sdxrun "$d/cli" python3 "$ROOT/tests/accel/churn.py" client "$p" "$n" "$RANDOM" >"$d.cli" 2>&1; then
    fail "churn" "client: $(tail -3 "$d.cli")"
    kill "$srv"
    return
  fi
  wait "$srv" || { fail "churn" "server: $(tail -3 "$d.srv")"; return; }
  why=$(accelerated "$d/cli" $((n * 32768 * 8 / 10)) 2>&1) || { fail "churn" "$why"; return; }
  seg=$(python3 - "$d" "$n" 2>&1 <<'EOF'
import glob, json, sys
d, n = sys.argv[1], int(sys.argv[2])
def seg(side):
    t = {}
    for f in glob.glob(d + "/" + side + "/*.json"):
        for k, v in json.load(open(f)).get("segments", {}).items():
            t[k] = t.get(k, 0) + v
    return t
c, s = seg("cli"), seg("srv")
if c.get("created", 0) + c.get("reused", 0) != n:
    sys.exit("client segments %s for %d connections" % (c, n))
if c.get("reused", 0) < n * 9 // 10 or s.get("cached", 0) < n * 9 // 10:
    sys.exit("segments were not reused: client %s, server %s" % (c, s))
print("client created=%d reused=%d, server attached=%d cached=%d" % (c["created"], c["reused"], s.get("attached", 0), s["cached"]))
EOF
  ) || { fail "churn" "$seg"; return; }
  pass "churn: $n connections, echo verified ($why; $seg)"
}
churn_case

# PostgreSQL + pgbench (both as the postgres user: a listener attaches only the connections of its
# own user, or of anyone when it runs as root).  The postmaster accepts, forks a backend per
# connection and closes its copy: the backend takes the connection over.
pg_case() {
  local d=$tmp/pg p pgbin=/usr/lib/postgresql/15/bin
  [[ -x $pgbin/postgres ]] || { fail "pgbench" "PostgreSQL 15 is not installed ($pgbin)"; return; }
  mkdir -p "$d" && chown postgres "$d" "$tmp" && chmod 755 "$tmp"
  p=$(port)
  su postgres -s /bin/bash -c "$pgbin/initdb -D $d/data -A trust" >"$d.initdb" 2>&1 || { fail "pgbench" "initdb: $(tail -3 "$d.initdb")"; return; }
  local env="SDX_ACCELERATE=1 SDX_STATS=1"
  su postgres -s /bin/bash -c "$env SDX_STATS_FILE=$d/srv/%p.json $SDX run -- $pgbin/postgres -D $d/data -p $p -k $d -c listen_addresses=127.0.0.1" >"$d.srv" 2>&1 &
  mkdir -p "$d/srv" "$d/cli" && chown postgres "$d/srv" "$d/cli"
  local srv=$!
  wait_listen "$p" || { fail "pgbench" "postgres did not listen: $(tail -3 "$d.srv")"; kill "$srv"; return; }
  if su postgres -s /bin/bash -c "cd $d; $env SDX_STATS_FILE=$d/cli/%p.json $SDX run -- pgbench -h 127.0.0.1 -p $p -i -s 2 postgres && $env SDX_STATS_FILE=$d/cli/%p.json $SDX run -- pgbench -h 127.0.0.1 -p $p -c 4 -j 2 -t 500 postgres" >"$d.cli" 2>&1 &&
    grep -q "number of failed transactions: 0" "$d.cli" && grep -q "number of transactions actually processed: 2000/2000" "$d.cli"; then
    local why
    if why=$(accelerated "$d/cli" 100000 2>&1); then pass "pgbench against PostgreSQL ($why)"; else fail "pgbench" "$why"; fi
  else
    fail "pgbench" "$(tail -5 "$d.cli")"
  fi
  su postgres -s /bin/bash -c "$pgbin/pg_ctl -D $d/data stop -m fast" >/dev/null 2>&1
  wait "$srv" 2>/dev/null
}
pg_case

# Network namespaces as separate hosts.  Namespace A has the address 10.231.0.1 on a veth whose
# other end, in namespace B, has 10.231.0.2.  Within A, 10.231.0.1 is an address of this host:
# sdxperf from A to it is accelerated.  From B it is another host: the same exchange stays on
# kernel TCP with the reason not_local, every byte still verified.
netns_case() {
  local a=sdxa$$ b=sdxb$$ va=sva$$ vb=svb$$ d=$tmp/netns p
  if ! { ip netns add "$a" && ip netns add "$b" && ip link add "$va" type veth peer name "$vb" &&
    ip link set "$va" netns "$a" && ip link set "$vb" netns "$b" &&
    ip -n "$a" addr add 10.231.0.1/24 dev "$va" && ip -n "$b" addr add 10.231.0.2/24 dev "$vb" &&
    ip -n "$a" link set "$va" up && ip -n "$b" link set "$vb" up &&
    ip -n "$a" link set lo up && ip -n "$b" link set lo up; } 2>"$tmp/netns.err"; then
    fail "netns" "could not set up the namespaces: $(tail -2 "$tmp/netns.err")"
    ip netns del "$a" 2>/dev/null
    ip netns del "$b" 2>/dev/null
    return
  fi
  local from
  for from in "$a" "$b"; do
    p=$(port)
    rm -rf "$d"
    mkdir -p "$d/srv" "$d/cli"
    ip netns exec "$a" env SDX_STATS_FILE="$d/srv/%p.json" timeout -k 5 60 "$SDX" run -- "$PERF" -s -1 -p "$p" >"$d.srv" 2>&1 &
    local srv=$! i
    for ((i = 0; i < 500; i++)); do
      [[ -n $(ip netns exec "$a" ss -ltnH "sport = :$p" 2>/dev/null) ]] && break
      sleep 0.01
    done
    local name="netns: sdxperf to 10.231.0.1 from namespace A"
    [[ $from == "$b" ]] && name="netns: sdxperf to 10.231.0.1 from namespace B"
    if ! ip netns exec "$from" env SDX_STATS_FILE="$d/cli/%p.json" timeout -k 5 60 "$SDX" run -- "$PERF" -c 10.231.0.1 -p "$p" -n 32M --verify --json >"$d.cli" 2>&1 ||
      ! grep -q '"verified":true' "$d.cli"; then
      fail "$name" "$(tail -3 "$d.cli")"
      kill "$srv" 2>/dev/null
      continue
    fi
    wait "$srv" || { fail "$name" "server: $(tail -3 "$d.srv")"; continue; }
    local why
    if [[ $from == "$a" ]]; then
      if why=$(accelerated "$d/cli" $(((32 << 20) * 99 / 100)) 2>&1); then pass "$name, its own address: $why"; else fail "$name" "$why"; fi
    elif why=$(python3 - "$d/cli" <<'PYEOF'
import glob, json, sys
acc = nl = tcp = 0
for f in glob.glob(sys.argv[1] + "/*.json"):
    j = json.load(open(f))
    acc += j["sockets"]["accelerated"]
    nl += j["fallbacks"]["not_local"]
    tcp += j["bytes"]["tcp_tx"]
if acc or not nl or tcp < 32 << 20:
    sys.exit(f"want kernel TCP with not_local: accelerated={acc} not_local={nl} tcp_tx={tcp}")
print(f"accelerated=0 not_local={nl} tcp_tx={tcp}")
PYEOF
    ); then
      pass "$name, another host: $why"
    else
      fail "$name" "$why"
    fi
  done
  ip netns del "$a"
  ip netns del "$b"
}
netns_case

summary
