# Shared by scripts/bench.sh and scripts/bench-cluster.sh (sourced, not run): logging, the Go builds of
# the peer brokers, and how a setup's version is named. Expects $root (the checkout) and $cache
# (TERN_BENCH_CACHE) to be set.

step() { printf '\n==> %s\n' "$*" >&2; }
has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
json_string() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# Pinned: the Go module proxy refuses comqtt's version list (and so @latest) with 403 but serves
# this release, the newest it has.
comqtt_version="v2.6.5"

# A Go module of ours in $cache/src/NAME, built to $cache/bin/NAME: main.go from stdin, or, with a
# package path as $3, that package of the module (a program the module ships).
build_go() { # name module@version [package]
    command -v go >/dev/null || { echo "go is not installed" >&2; return 1; }
    [ -x "$cache/bin/$1" ] && return 0
    local dir="$cache/src/$1"
    rm -rf "$dir" && mkdir -p "$dir"
    [ -n "${3:-}" ] || cat > "$dir/main.go"
    printf 'module tern.local/%s\n\ngo 1.21\n' "$1" > "$dir/go.mod"
    # GOMAXPROCS only for the build (two cores); the brokers run with Go's defaults.
    (cd "$dir" && export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMAXPROCS=1 &&
        go get "$2" && { [ -n "${3:-}" ] || go mod tidy; } && go build -o "$cache/bin/$1" "${3:-.}")
}

# comqtt on one node, in memory, as both scripts measure it: $cache/bin/comqtt-bench.
install_comqtt_bench() {
    build_go comqtt-bench "github.com/wind-c/comqtt/v2@$comqtt_version" <<'GO'
// Command comqtt-bench: a comqtt broker with the library's default options (in memory, no storage
// hook), the allow-all auth hook and one TCP listener (-addr).
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/wind-c/comqtt/v2/mqtt"
	"github.com/wind-c/comqtt/v2/mqtt/hooks/auth"
	"github.com/wind-c/comqtt/v2/mqtt/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	flag.Parse()
	server := mqtt.New(nil)
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := server.AddListener(listeners.NewTCP("tcp", *addr, nil)); err != nil {
		log.Fatal(err)
	}
	if err := server.Serve(); err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
}
GO
}

# The version of a module built into one of those Go binaries, read from the binary itself.
go_module_version() { # binary module
    go version -m "$cache/bin/$1" | awk -v m="$2" '($1 == "mod" || $1 == "dep") && $2 == m { print $3; exit }'
}

# Tern's version and the commit it was built from, "+changes" when what builds the broker or
# drives the load differs from that commit (a docs edit during a run does not make it another broker).
tern_version() {
    local version rev
    version=$("$root/target/release/tern-broker" --version | awk '{print $2}')
    rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$root" diff --quiet HEAD -- broker e2e/bench scripts Cargo.toml Cargo.lock 2>/dev/null ||
        rev="$rev+changes"
    echo "$version ($rev)"
}
