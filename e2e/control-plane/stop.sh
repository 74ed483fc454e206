#!/usr/bin/env bash
# Stop the control plane started by start.sh (controller-manager, apiserver, then etcd): SIGTERM, wait,
# SIGKILL after 20 s. Only the pids start.sh recorded are signalled, and only if they still run a binary of that name.
# Idempotent. CLEAN=1 also removes the run directory.
set -euo pipefail

RUN="${TERN_CP_RUN:-${TMPDIR:-/tmp}/tern-control-plane-$(id -u)}"

ours() { # pid name: does pid still run a binary called name (whatever K8S_VERSION started it)?
  local exe; exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}; [[ "${exe##*/}" == "$2" ]]
}
for name in kube-controller-manager kube-apiserver etcd; do
  f="$RUN/$name.pid"; [[ -f "$f" ]] || continue
  pid=$(cat "$f")
  if [[ -n "$pid" ]] && ours "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" "$name" || break; sleep 0.2; done
    if ours "$pid" "$name"; then echo "stop.sh: $name ($pid) ignored SIGTERM, killing" >&2; kill -KILL "$pid" 2>/dev/null || true; fi
    echo "stop.sh: stopped $name ($pid)" >&2
  fi
  rm -f "$f"
done
if [[ "${CLEAN:-0}" == 1 ]]; then rm -rf "$RUN"; fi
