#!/usr/bin/env bash
# Micro-benchmarks of the shim itself (not timed tests): JSON under build/bench/, a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
mkdir -p "$OUT"
LIB=$PWD/build/lib/libsdx.so

# 1. Added cost per passthrough call: median of several runs, with a no-preload control.
runs=${RUNS:-5}
: >"$OUT/passthrough-runs.jsonl"
for i in $(seq "$runs"); do
  build/bench/passthrough | sed 's/^/{"mode":"control",/; s/^{"mode":"control",{/{"mode":"control",/' >>"$OUT/passthrough-runs.jsonl"
  LD_PRELOAD=$LIB build/bench/passthrough | sed 's/^{/{"mode":"preload",/' >>"$OUT/passthrough-runs.jsonl"
done

# 2. Start-up: /bin/true, with the shim preloaded, and through the launcher ("--" separates the
#    startup tool's commands, so `sdx run` gets none of its own).
build/bench/startup "${STARTUP_RUNS:-300}" -- /bin/true -- "LD_PRELOAD=$LIB" /bin/true -- build/bin/sdx run /bin/true \
  >"$OUT/startup.json"

# 3. The protocol engine over shared memory between two processes vs kernel TCP loopback, the same
#    work side by side in each run (not yet through the shim: that is the next step).
: >"$OUT/shm-engine-runs.jsonl"
for i in $(seq "${SHM_RUNS:-3}"); do
  build/bench/shm_engine stream 131072 2000000000 | sed 's/^{/{"variant":"zcopy",/' >>"$OUT/shm-engine-runs.jsonl"
  SDX_BENCH_ZCOPY=0 build/bench/shm_engine stream 131072 2000000000 | sed 's/^{/{"variant":"bcopy",/' >>"$OUT/shm-engine-runs.jsonl"
  build/bench/shm_engine pingpong 64 20000 | sed 's/^{/{"variant":"default",/' >>"$OUT/shm-engine-runs.jsonl"
done

/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/passthrough-runs.jsonl")]
def med(mode, kind):
    return statistics.median(r[kind]["added_ns_per_call"] for r in rows if r["mode"] == mode)
st = json.load(open(f"{out}/startup.json"))["commands"]
base = st[0]["median_us"]
summary = {
    "passthrough_added_ns_per_call": {"pipe": med("preload", "pipe"), "tcp": med("preload", "tcp")},
    "control_ns_per_call (no preload, should be ~0)": {"pipe": med("control", "pipe"), "tcp": med("control", "tcp")},
    "startup_us": {"/bin/true": base, "LD_PRELOAD /bin/true": st[1]["median_us"], "sdx run -- /bin/true": st[2]["median_us"]},
    "startup_added_ms": {"preload": round((st[1]["median_us"] - base) / 1000, 3),
                         "sdx run": round((st[2]["median_us"] - base) / 1000, 3)},
}
eng = [json.loads(l) for l in open(f"{out}/shm-engine-runs.jsonl")]
def emed(bench, path, variant, key):
    v = [r[key] for r in eng if r["bench"] == bench and r["path"] == path and r["variant"] == variant]
    return round(statistics.median(v), 3) if v else None
summary["engine_over_shm_vs_tcp (median)"] = {
    "stream 128K GB/s": {"tcp": emed("stream", "tcp", "zcopy", "gbyte_per_s"),
                         "shm zcopy": emed("stream", "shm", "zcopy", "gbyte_per_s"),
                         "shm bcopy": emed("stream", "shm", "bcopy", "gbyte_per_s")},
    "pingpong 64B half-RTT p50 us": {"tcp": emed("pingpong", "tcp", "default", "half_rtt_p50_us"),
                                     "shm": emed("pingpong", "shm", "default", "half_rtt_p50_us")},
}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
bench/apps.sh  # 4. Real programs (iperf3, sockperf, redis, nginx + wrk, connections), kernel TCP vs sdx: build/bench/apps.json
