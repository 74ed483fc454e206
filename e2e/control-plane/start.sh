#!/usr/bin/env bash
# Start etcd, kube-apiserver and kube-controller-manager (built by build.sh) on 127.0.0.1, wait until the
# API server is ready and the `default` namespace exists, and write a kubeconfig (admin, system:masters).
# Run state (data, certs, logs, pids, kubeconfig) lives in $TERN_CP_RUN (default /tmp/tern-control-plane-$UID).
# Idempotent: if the control plane recorded there is already up and ready, it is left running.
# Prints the kubeconfig path on stdout; `source $TERN_CP_RUN/env` exports KUBECONFIG and the ports.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
CACHE_ROOT="${TERN_CP_CACHE:-$HOME/.cache/tern-control-plane}"
BIN="$CACHE_ROOT/$K8S_VERSION/bin"
RUN="${TERN_CP_RUN:-${TMPDIR:-/tmp}/tern-control-plane-$(id -u)}"
TIMEOUT="${TERN_CP_TIMEOUT:-180}"
export K8S_VERSION TERN_CP_RUN="$RUN"

log() { echo "start.sh: $*" >&2; }

alive() { # pidfile binary
  local pid; pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

readyz() { # -> 0 when /readyz says ok
  curl -fsS --max-time 5 --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $(cat "$RUN/token")" \
    "https://127.0.0.1:$(cat "$RUN/apiserver.port")/readyz" 2>/dev/null | grep -qx ok
}

if [[ -f "$RUN/kubeconfig" ]] && alive etcd "$BIN/etcd" && alive kube-apiserver "$BIN/kube-apiserver" \
   && alive kube-controller-manager "$BIN/kube-controller-manager" && readyz; then
  log "already running ($RUN)"; echo "$RUN/kubeconfig"; exit 0
fi
# something is half up or stale: stop it cleanly and start fresh
"$HERE/stop.sh" >&2 || true

"$HERE/build.sh" >&2

t0=$(date +%s.%N)
rm -rf "$RUN"; mkdir -p "$RUN"/{etcd,pki,cert-dir,logs}; chmod 700 "$RUN"

# ports: free ones on 127.0.0.1 unless given
read -r p1 p2 p3 < <(python3 - <<'PY'
import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])
PY
)
ETCD_PORT="${TERN_CP_ETCD_PORT:-$p1}"; ETCD_PEER_PORT="${TERN_CP_ETCD_PEER_PORT:-$p2}"; API_PORT="${TERN_CP_API_PORT:-$p3}"
echo "$API_PORT" > "$RUN/apiserver.port"

# PKI: a CA, a serving cert for 127.0.0.1/localhost/kubernetes.default.svc, a service-account key
P="$RUN/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tern-e2e-ca" \
  -keyout "$P/ca.key" -out "$P/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$P/apiserver.key" -out "$P/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' > "$P/apiserver.ext"
openssl x509 -req -in "$P/apiserver.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 3650 \
  -extfile "$P/apiserver.ext" -out "$P/apiserver.crt" 2>/dev/null
openssl genrsa -out "$P/sa.key" 2048 2>/dev/null
TOKEN=$(openssl rand -hex 24); echo "$TOKEN" > "$RUN/token"
echo "$TOKEN,admin,admin,system:masters" > "$P/tokens.csv"
chmod 600 "$P"/*.key "$P/tokens.csv" "$RUN/token"

spawn() { # name args...
  local name=$1; shift
  setsid "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
}
fail() { log "$*"; for f in "$RUN"/logs/*.log; do echo "--- $f (tail)" >&2; tail -n 30 "$f" >&2; done; "$HERE/stop.sh" >&2 || true; exit 1; }

spawn etcd "$BIN/etcd" --name default --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn

deadline=$(( $(date +%s) + TIMEOUT ))
until curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
  alive etcd "$BIN/etcd" || fail "etcd exited"
  (( $(date +%s) < deadline )) || fail "etcd not healthy after ${TIMEOUT}s"
  sleep 0.2
done
t_etcd=$(date +%s.%N)

spawn kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --cert-dir "$RUN/cert-dir" --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --authorization-mode RBAC --token-auth-file "$P/tokens.csv" --anonymous-auth=false \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$P/sa.key" --service-account-signing-key-file "$P/sa.key" \
  --endpoint-reconciler-type=none --profiling=false

until readyz; do
  alive kube-apiserver "$BIN/kube-apiserver" || fail "kube-apiserver exited"
  (( $(date +%s) < deadline )) || fail "kube-apiserver not ready after ${TIMEOUT}s"
  sleep 0.5
done
t_api=$(date +%s.%N)

KC="$RUN/kubeconfig"
cat > "$KC.tmp" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: tern-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$P/ca.crt")
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: tern-e2e
  context: {cluster: tern-e2e, user: admin}
current-context: tern-e2e
YAML
chmod 600 "$KC.tmp"; mv "$KC.tmp" "$KC"

spawn kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KC" --authentication-kubeconfig "$KC" --authorization-kubeconfig "$KC" \
  --controllers statefulset-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,root-ca-certificate-publisher-controller \
  --leader-elect=false --secure-port 0 \
  --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
  --use-service-account-credentials=false --profiling=false

until curl -fsS --max-time 5 -o /dev/null --cacert "$P/ca.crt" -H "Authorization: Bearer $TOKEN" \
      "https://127.0.0.1:$API_PORT/api/v1/namespaces/default/serviceaccounts/default" 2>/dev/null; do
  alive kube-controller-manager "$BIN/kube-controller-manager" || fail "kube-controller-manager exited"
  (( $(date +%s) < deadline )) || fail "default namespace / default ServiceAccount missing after ${TIMEOUT}s"
  sleep 0.5
done
t_done=$(date +%s.%N)

cat > "$RUN/env" <<ENV
export KUBECONFIG=$KC
export TERN_CP_RUN=$RUN
export TERN_CP_API_PORT=$API_PORT
export TERN_CP_ETCD_PORT=$ETCD_PORT
ENV
d() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a - b}'; }
log "etcd healthy $(d "$t_etcd" "$t0")s, apiserver ready +$(d "$t_api" "$t_etcd")s, default ns+SA +$(d "$t_done" "$t_api")s; total $(d "$t_done" "$t0")s"
log "up: https://127.0.0.1:$API_PORT (logs in $RUN/logs)"
echo "$KC"
