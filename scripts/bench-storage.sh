#!/usr/bin/env bash
# Storage benchmarks (docs/storage.md): QoS 1 and QoS 2 point-to-point and fan-out with every client
# keeping its session, so that a broker that stores sessions stores their messages. Tern with storage
# off, batched (10 ms) and sync, side by side with Mosquitto with persistence on and mochi-mqtt with
# its Badger storage hook, one broker at a time, each case against a freshly started broker on a
# fresh data directory. Then Tern's restart after kill -9 against the number of stored messages.
#
# Usage: scripts/bench-storage.sh [--quick] [--duration S] [--setups LIST] [--cases LIST]
#                                 [--restart-sizes LIST] [--publish]
#   --quick              2 s per case and restarts with 10,000 and 100,000 messages (a smoke run)
#   --duration S         measured seconds per throughput case (default 10)
#   --setups LIST        from tern-off,tern-batched,tern-sync,mosquitto,mochi-badger (default: all)
#   --cases LIST         from p2p-q1,p2p-q2,fanout-q1,fanout-q2,restart (default: all)
#   --restart-sizes LIST stored messages for the restart case (default 10000,100000,1000000)
#   --add                keep the results already in target/bench-storage/RESULTS (the cases run
#                        now replace their own earlier results)
#   --publish            put the section into docs/benchmarks.md in place of its "## Storage"
#                        section (default: target/bench-storage/storage.md)
# Environment: TERN_BENCH_CACHE (default ~/.cache/tern-bench) holds the peer brokers it builds.
#
# Results: target/bench-storage/RESULTS/*.json (tern-bench's) and restart.tsv; broker logs in
# target/bench-storage/logs/. Nothing in the test suite runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

invocation="scripts/bench-storage.sh${*:+ $*}"
quick=0
publish=0
add=0
duration=10
all_setups="tern-off,tern-batched,tern-sync,mosquitto,mochi-badger"
all_cases="p2p-q1,p2p-q2,fanout-q1,fanout-q2,restart"
setups=$all_setups
cases=$all_cases
sizes="10000,100000,1000000"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; duration=2; sizes="10000,100000" ;;
        --publish) publish=1 ;;
        --add) add=1 ;;
        --duration) duration="$2"; shift ;;
        --setups) setups="$2"; shift ;;
        --cases) cases="$2"; shift ;;
        --restart-sizes) sizes="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

cache="${TERN_BENCH_CACHE:-$HOME/.cache/tern-bench}"
out="$root/target/bench-storage"
results="$out/RESULTS"
logs="$out/logs"
work="$out/work"
bench="$root/target/release/tern-bench"
tern="$root/target/release/tern-broker"
export GOFLAGS=-mod=mod GOMAXPROCS=1 GOTOOLCHAIN=local

# step, as_root, build_go, go_module_version, tern_version
. "$root/scripts/lib/bench-common.sh"

# --- setup --------------------------------------------------------------------------------------

ulimit -n "$(ulimit -Hn)"
if [ "$add" = 1 ]; then
    for case_name in ${cases//,/ }; do
        if [ "$case_name" = restart ]; then rm -f "$results/restart.tsv"; fi
        for setup in ${setups//,/ }; do rm -f "$results/$case_name--$setup.json"; done
    done
    rm -rf "$logs" "$work"
else
    rm -rf "$results" "$logs" "$work"
fi
mkdir -p "$results" "$logs" "$work" "$cache/bin"

step "installing what the run needs"
need_debs=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_debs+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_debs+=(mosquitto-clients)
command -v jq >/dev/null || need_debs+=(jq)
if [ ${#need_debs[@]} -gt 0 ]; then
    as_root apt-get install -y --no-install-recommends "${need_debs[@]}"
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --locked -p tern-broker -p tern-bench

install_mochi_badger() {
    build_go mochi-badger github.com/mochi-mqtt/server/v2@latest <<'GO'
// Command mochi-badger: a mochi-mqtt broker with the library's default options, the allow-all auth
// hook, its Badger storage hook on -dir (mochi's own hooks/storage/badger, with its defaults) and
// one TCP listener (-addr).
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	dir := flag.String("dir", "badger", "the Badger store's directory")
	flag.Parse()
	server := mqtt.New(nil)
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := server.AddHook(new(badger.Hook), &badger.Options{Path: *dir}); err != nil {
		log.Fatal(err)
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		log.Fatal(err)
	}
	if err := server.Serve(); err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = server.Close()
}
GO
}

unmeasured=()
available=""
for setup in ${setups//,/ }; do
    case "$setup" in
        tern-off|tern-batched|tern-sync|mosquitto) available="$available $setup" ;;
        mochi-badger)
            if install_mochi_badger > "$logs/install-mochi-badger.log" 2>&1; then
                available="$available $setup"
            else
                unmeasured+=("mochi-badger: could not be built (see $logs/install-mochi-badger.log)")
            fi
            ;;
        *) echo "unknown setup: $setup" >&2; exit 2 ;;
    esac
done

# --- brokers ------------------------------------------------------------------------------------

pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true' EXIT
port=$((20000 + RANDOM % 10000))

# Starts `setup` on a new port with an empty data directory; sets pid, port, data, label, version,
# broker_cmd, variant.
start_broker() { # setup
    port=$((port + 1))
    data="$work/$1-$port"
    rm -rf "$data" && mkdir -p "$data"
    local log="$logs/$1-$port.log"
    case "$1" in
        tern-*)
            local mode=${1#tern-}
            {
                printf 'listeners: [{name: mqtt, bind: "127.0.0.1:%s"}]\n' "$port"
                printf 'auth: {allow_anonymous: true}\nlog: {level: warn}\n'
                [ "$mode" = off ] || printf 'storage: {dir: %s, durability: %s}\n' "$data/store" "$mode"
                [ -z "${extra_config:-}" ] || printf '%s\n' "$extra_config"
            } > "$data/tern.yaml"
            "$tern" --config "$data/tern.yaml" > "$log" 2>&1 &
            label=tern; version=$(tern_version)
            broker_cmd="tern-broker --config tern.yaml"
            case "$mode" in
                off) variant="storage off (in memory)" ;;
                batched) variant="storage: batched (10 ms)" ;;
                sync) variant="storage: sync" ;;
            esac
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n' \
                "$port" "$data" > "$data/mosquitto.conf"
            "$mosquitto_bin" -c "$data/mosquitto.conf" > "$log" 2>&1 &
            label=mosquitto; version=$(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || "$mosquitto_bin" -h | head -n 1)
            broker_cmd="mosquitto -c mosquitto.conf"
            variant="persistence true (its defaults: autosave_interval 1800 s)"
            ;;
        mochi-badger)
            "$cache/bin/mochi-badger" -addr "127.0.0.1:$port" -dir "$data/badger" > "$log" 2>&1 &
            label=mochi; version=$(go_module_version mochi-badger github.com/mochi-mqtt/server/v2)
            broker_cmd="mochi-badger -addr 127.0.0.1:PORT -dir DIR"
            variant="badger storage hook"
            ;;
    esac
    pid=$!
    for _ in $(seq 1 500); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    echo "$1 did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

stop_broker() {
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}

# --- throughput cases ---------------------------------------------------------------------------

declare -A case_args=(
    [p2p-q1]="p2p --clients 100 --qos 1"
    [p2p-q2]="p2p --clients 100 --qos 2"
    [fanout-q1]="fanout --clients 100 --qos 1"
    [fanout-q2]="fanout --clients 100 --qos 2"
)
for case_name in ${cases//,/ }; do
    [ "$case_name" = restart ] && continue
    [ -n "${case_args[$case_name]:-}" ] || { echo "unknown case: $case_name" >&2; exit 2; }
    for setup in $available; do
        step "$case_name on $setup"
        start_broker "$setup" || { unmeasured+=("$setup $case_name: did not start"); continue; }
        # shellcheck disable=SC2086
        if ! "$bench" ${case_args[$case_name]} --payload 64 --rate 0 --persistent-sessions \
            --host 127.0.0.1 --port "$port" --broker-pid "$pid" --duration "$duration" \
            --label "$label" --broker-version "$version" --broker-cmd "$broker_cmd" \
            --variant "$variant" --json "$results/$case_name--$setup.json" \
            > "$logs/$case_name--$setup.txt" 2>&1; then
            unmeasured+=("$setup $case_name: tern-bench failed (see $logs/$case_name--$setup.txt)")
        fi
        stop_broker
    done
done

# --- restart after kill -9 ----------------------------------------------------------------------

# One offline session holds `n` QoS 1 messages of 64 bytes, queued with durability batched (the
# fill is not what is measured); then kill -9, and a restart with durability sync is timed from the
# process's start to its first accepted connection. Afterwards the session is drained and counted.
# The session's queue is bounded at `n` messages rather than the default 10,000.
restart_case() { # n
    local n=$1
    local http=$((port + 5000))
    extra_config="limits: {max_queued_messages: $n, max_queued_bytes: $((n * 200)), max_queued_bytes_total: $((n * 200))}
http: {bind: \"127.0.0.1:$http\"}"
    start_broker tern-batched
    mosquitto_sub -p "$port" -i holder -c -q 1 -t restart/q -E
    local payload
    payload=$(printf '%064d' 0)
    # --repeat, not -l: mosquitto_pub -l drops lines when stdin outruns it (about a third of
    # 100,000 arrived, with Mosquitto as the broker too).
    mosquitto_pub -p "$port" -q 1 -t restart/q -m "$payload" --repeat "$n"
    # Killed once the writer has caught up (its commit count stops moving): what is measured is
    # reading back all n, not what batched may lose.
    local commits="" last=-1
    until [ "$commits" = "$last" ]; do
        last=$commits
        sleep 0.5
        commits=$(curl -s "http://127.0.0.1:$http/metrics" | awk '$1 == "tern_storage_commits_total" {print $2}')
    done
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    local size
    size=$(du -b "$data/store/tern.redb" | cut -f1)
    # The restart logs at info: its "storage: read back ... millis=" line says how long reading took.
    sed -i 's/durability: batched/durability: sync/; s/level: warn/level: info/' "$data/tern.yaml"
    local log="$logs/restart-$n.log" started took
    started=$(date +%s%N)
    "$tern" --config "$data/tern.yaml" > "$log" 2>&1 &
    pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.005
    done
    took=$(( ($(date +%s%N) - started) / 1000000 ))
    local read_back stored
    read_back=$(sed -n 's/.*storage: read back.* millis=\([0-9]*\).*/\1/p' "$log" | head -1)
    stored=$(sed -n 's/.*storage: read back.* messages=\([0-9]*\).*/\1/p' "$log" | head -1)
    local rss
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    local received
    received=$(mosquitto_sub -p "$port" -i holder -c -q 1 -t restart/q -W 120 -C "$n" 2>/dev/null | wc -l)
    stop_broker
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${stored:--}" "$size" "$took" "${read_back:--}" "$rss" "$received" >> "$results/restart.tsv"
}

if [[ ",$cases," == *",restart,"* ]]; then
    for n in ${sizes//,/ }; do
        step "restart with $n stored messages"
        restart_case "$n" || unmeasured+=("restart with $n messages failed (see $logs)")
    done
fi

# --- report -------------------------------------------------------------------------------------

step "report"
page="$out/storage.md"
{
    echo "## Storage"
    echo
    echo "Every client keeps its session (MQTT 3.1.1 CleanSession = 0), so a broker that stores sessions"
    echo "stores their QoS 1 and 2 messages; 64-byte payloads, publishers as fast as flow control allows"
    echo "(100 in flight each), ${duration} s measured after 2 s of warm-up, each case against a freshly started"
    echo "broker on an empty data directory. Tern's \`sync\` acknowledges only once the message is on disk;"
    echo "\`batched\` syncs every 10 ms; Mosquitto with \`persistence true\` writes its database every"
    echo "\`autosave_interval\` (1800 s) and at shutdown; mochi-mqtt's Badger hook writes every change"
    echo "without syncing (Badger's default \`SyncWrites: false\`). Only Tern \`sync\` survives a crash of"
    echo "the machine without losing acknowledged messages."
    echo
    echo "| case | setup | delivered/s | p50 ms | p99 ms | broker CPU µs per delivery | lost | duplicates |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for case_name in ${all_cases//,/ }; do
        [ "$case_name" = restart ] && continue
        for setup in ${all_setups//,/ }; do
            file="$results/$case_name--$setup.json"
            [ -f "$file" ] || continue
            jq -r --arg case "$case_name" '
                def r(n): (. * pow(10; n) | round) / pow(10; n);
                [ $case,
                  "\(.broker.label) \(.broker.version // "") — \(.broker.variant // "")",
                  (.throughput.delivered_per_s | round | tostring),
                  (.latency.p50_ms | r(2) | tostring),
                  (.latency.p99_ms | r(2) | tostring),
                  (if .throughput.delivered > 0 then (.broker_usage.cpu_s * 1e6 / (.throughput.delivered) | r(1) | tostring) else "–" end),
                  (.delivery.lost | tostring),
                  (.delivery.duplicates | tostring) ]
                | "| " + join(" | ") + " |"' "$file"
        done
    done
    if [ -f "$results/restart.tsv" ]; then
        echo
        echo "Restart after \`kill -9\` with one offline session holding N stored QoS 1 messages (64-byte"
        echo "payloads; queued with \`batched\`, restarted with \`sync\`): from the process's start to its first"
        echo "accepted connection, which comes after the store is checked page by page and read back"
        echo "whole; then the session is drained and its messages counted."
        echo
        echo "| stored messages (read back) | store file | start to accepting | of which reading the store back | RSS after start | drained |"
        echo "|---:|---:|---:|---:|---:|---:|"
        while IFS=$'\t' read -r n size took read_back rss received; do
            printf '| %s | %s MiB | %s ms | %s ms | %s MiB | %s |\n' "$n" \
                "$(awk -v b="$size" 'BEGIN {printf "%.1f", b / 1048576}')" "$took" "${read_back:-?}" \
                "$(awk -v k="$rss" 'BEGIN {printf "%.0f", k / 1024}')" "$received"
        done < "$results/restart.tsv"
    fi
    if [ ${#unmeasured[@]} -gt 0 ]; then
        echo
        echo "Not measured:"
        echo
        for line in "${unmeasured[@]}"; do echo "- $line"; done
    fi
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r);"
    echo "command: \`$invocation\` ($(date -u +%Y-%m-%d))."
} > "$page"
cat "$page"

if [ "$publish" = 1 ]; then
    target="$root/docs/benchmarks.md"
    python3 - "$target" "$page" <<'PY'
import sys
target, section = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
text = open(target).read()
start = text.find("\n## Storage\n")
if start < 0:
    text = text.rstrip() + "\n\n" + section
else:
    end = text.find("\n## ", start + 1)
    text = text[: start + 1] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
open(target, "w").write(text)
PY
    echo "wrote the Storage section of $target"
fi
