#!/usr/bin/env bash
# A/B of two tern-broker binaries on this machine: the same tern-bench cases against each, one after
# the other and alternating case by case, so that both see the same machine within seconds. For
# checking that a change keeps the single-node figures (before scripts/bench.sh, which takes hours).
#
# Usage: scripts/bench-ab.sh BASE_BINARY NEW_BINARY [ROUNDS]
#   e.g.  git worktree add /tmp/base aad03d0 && (cd /tmp/base && cargo build --release -p tern-broker)
#         scripts/bench-ab.sh /tmp/base/target/release/tern-broker target/release/tern-broker 2
# Results: target/bench-ab/ (one JSON and text file per run), then a summary: delivered/s, p99 and
# broker CPU µs per delivered message (the figure least moved by other load) per case and run, and
# bytes per idle connection.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
base=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-2}
out=target/bench-ab
rm -rf "$out"; mkdir -p "$out"
cargo build --release --locked -p tern-bench >&2
bench=target/release/tern-bench
ulimit -n 20000 2>/dev/null || true
cases=(
    "p2p --clients 100 --qos 1 --payload 64 --rate 0"
    "p2p --clients 100 --qos 0 --payload 1024 --rate 0"
    "fanout --clients 1000 --qos 0 --payload 64 --rate 0"
    "fanout --clients 1000 --qos 2 --payload 64 --rate 10"
    "fanin --clients 1000 --qos 1 --payload 64 --rate 0"
    "shared --clients 100 --group-size 10 --qos 1 --payload 64 --rate 100"
    "connections --clients 19000 --sources 2 --workers 2"
)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT
# Below Linux's ephemeral range (32768 and up), where a client's own port could be taken already.
port=$((20000 + RANDOM % 10000))
for round in $(seq 1 "$rounds"); do
    for i in "${!cases[@]}"; do
        for which in base new; do
            binary=$base; [ "$which" = new ] && binary=$new
            # The connections case binds its clients' source ports itself: with the last run's
            # sockets still in TIME_WAIT (60 s), finding free ports slows its connects thirtyfold,
            # whichever broker runs. Wait for them to go.
            if [[ ${cases[$i]} == connections* ]]; then
                for _ in $(seq 1 45); do
                    [ "$(ss -Htan state time-wait 2>/dev/null | wc -l)" -lt 500 ] && break
                    sleep 2
                done
            fi
            port=$((port + 1))
            dir=$(mktemp -d)
            printf 'listeners:\n  - name: bench\n    bind: 127.0.0.1:%s\nauth:\n  allow_anonymous: true\n' "$port" >"$dir/tern.yaml"
            RUST_LOG=warn "$binary" --config "$dir/tern.yaml" >"$dir/broker.log" 2>&1 &
            pid=$!
            sleep 0.5
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "the $which broker did not start:" >&2; cat "$dir/broker.log" >&2; exit 1
            fi
            # shellcheck disable=SC2206
            args=(${cases[$i]})
            extra=(--duration 5)
            [ "${args[0]}" = connections ] || extra+=(--warmup 2 --drain-timeout 5)
            name="r$round-c$((i + 1))-$which"
            "$bench" "${args[@]}" --port "$port" --broker-pid "$pid" "${extra[@]}" \
                --json "$out/$name.json" >"$out/$name.txt" 2>&1 || echo "$name failed: see $out/$name.txt" >&2
            kill "$pid" 2>/dev/null || echo "the $which broker had exited: see $name.txt" >&2
            wait "$pid" 2>/dev/null || true; pid=""
            rm -rf "$dir"
            echo "round $round, case $((i + 1)) (${cases[$i]}), $which: done" >&2
        done
    done
done
python3 - "$out" <<'PY'
import glob, json, sys
from collections import defaultdict

out = sys.argv[1]
runs = defaultdict(lambda: {"base": [], "new": []})
for path in sorted(glob.glob(f"{out}/r*-c*-*.json")):
    _, case, which = path.rsplit("/", 1)[1][:-5].split("-")
    with open(path) as f:
        runs[int(case[1:])][which].append(json.load(f))

def get(result, path):
    for key in path.split("."):
        result = result.get(key) if isinstance(result, dict) else None
    return result

def show(result):
    per_connection = get(result, "connect.bytes_per_connection")
    if per_connection is not None:
        return f"{per_connection:.0f} B/connection, {get(result, 'connect.per_s') or 0:.0f} connects/s"
    cpu = get(result, "broker_usage.cpu_s") or 0
    delivered = get(result, "throughput.delivered") or 0
    per = 1e6 * cpu / delivered if delivered else float("nan")
    return (f"{get(result, 'throughput.delivered_per_s') or 0:9.0f}/s  "
            f"p99 {get(result, 'latency.p99_ms') or 0:8.2f} ms  {per:6.3f} µs CPU/msg")

for case in sorted(runs):
    base, new = runs[case]["base"], runs[case]["new"]
    if not base or not new:
        continue
    command = get(base[0], "command") or []
    if isinstance(command, list):
        command = " ".join(command[1:command.index("--port")] if "--port" in command else command[1:])
    print(f"case {case}: {command}")
    print("  base: " + " | ".join(show(r) for r in base))
    print("  new:  " + " | ".join(show(r) for r in new))
PY
