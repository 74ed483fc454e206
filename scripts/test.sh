#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian's mosquitto
# clients and mosquitto_passwd, Python's paho-mqtt, pytest and friends in a virtualenv), checks
# formatting and lints, then runs the Rust tests (unit, property and integration tests against the
# real binary) and the Python conformance and edge suites against the real binary (the conformance
# suite twice: against one broker, and against a three-node cluster), and finally the
# operator against a real Kubernetes control plane (kube-apiserver, etcd and kube-controller-manager
# built from the upstream Go modules by e2e/control-plane/, cached after the first build) with helm
# and kubectl from npm.
#
# Usage: scripts/test.sh            (everything)
#        SKIP_LINT=1 scripts/test.sh (no fmt/clippy)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Incremental caches only help edit-compile loops and cost gigabytes on a clean build.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

step "system packages"
# mosquitto-clients for mosquitto_pub/sub; mosquitto for mosquitto_passwd (the users-file tests
# check that its hashes work unchanged).
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients mosquitto
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

step "python packages"
venv="$root/e2e/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r e2e/requirements.txt

if [ "${SKIP_LINT:-0}" != 1 ]; then
    step "format and lints"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "conformance table is current"
python3 scripts/conformance.py --check

# Every cargo command below selects the whole workspace so that features unify the same way each
# time and dependencies are built once; the binaries the later suites start (tern-broker,
# tern-operator, tern-test-kubelet) come from this build.
step "rust tests"
cargo test --workspace --locked

step "conformance and edge suites (paho-mqtt, mosquitto clients, raw sockets, TLS, WebSocket)"
TERN_BROKER_BIN="$root/target/debug/tern-broker" \
    "$venv/bin/python" -m pytest e2e/conformance e2e/edge -q -p no:cacheprovider

step "conformance suite against a three-node cluster (each test's clients spread over the nodes)"
TERN_TEST_CLUSTER=3 TERN_BROKER_BIN="$root/target/debug/tern-broker" \
    "$venv/bin/python" -m pytest e2e/conformance -q -p no:cacheprovider

step "operator against a real control plane (helm, kubectl, tern-test-kubelet, rumqttc)"
e2e/control-plane/build.sh
# A control plane of its own, so a developer's running one is left alone.
export TERN_CP_RUN="${TMPDIR:-/tmp}/tern-cp-test-$$"
stop_control_plane() { CLEAN=1 e2e/control-plane/stop.sh >/dev/null 2>&1 || true; }
trap stop_control_plane EXIT
KUBECONFIG=$(e2e/control-plane/start.sh)
export KUBECONFIG
PATH="$(e2e/control-plane/tools.sh):$PATH"
export PATH
# The ignored tests are exactly the ones that need this control plane.
cargo test --workspace --locked -- --ignored --test-threads=1
