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
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
