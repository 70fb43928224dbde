#!/usr/bin/env bash
# Print the path of a SeaweedFS `weed` binary: the S3-compatible object store that the durability tests
# and benches keep a backup repository in (a real server on 127.0.0.1, not a mock).
#
# 1. `weed` on PATH is used as it is.
# 2. Else the cache ${PULUMI_DBOS_CACHE:-~/.cache/pulumi-dbos}/seaweedfs-<version>/bin/weed.
# 3. Else built there from the Go module proxy (no binary downloads). `go install …@version` refuses
#    (seaweedfs' go.mod has a non-local `replace` for go-bip39, which go install does not allow), so a
#    wrapper module requires seaweedfs at the pinned version and repeats that replace, then `go build`.
#    First run: ~75 s to fetch ~430 modules, ~8 CPU-minutes and ~2.6 GB of memory to compile (233 MB).
# Why SeaweedFS: MinIO is not served by any registry reachable here; SeaweedFS is (Apache-2.0, a real
# S3 API with TLS, signature v4 and multipart uploads, which pgBackRest needs).
# Progress goes to stderr; stdout is only the path.
set -euo pipefail
version="v0.0.0-20261109003541-7506e5f91cd6"

if command -v weed >/dev/null 2>&1; then
    command -v weed
    exit 0
fi
cache="${PULUMI_DBOS_CACHE:-$HOME/.cache/pulumi-dbos}/seaweedfs-${version##*-}"
bin="$cache/bin/weed"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "ensure-seaweedfs: Go is needed to build SeaweedFS" >&2; exit 1; }
say() { echo "ensure-seaweedfs: $*" >&2; }
mkdir -p "$cache/build" "$cache/bin"
log="$cache/build.log"
: > "$log"
work="$cache/build"
cat > "$work/go.mod" <<GOMOD
module pulumi-dbos.local/weed

go 1.26.6

require github.com/seaweedfs/seaweedfs $version

// seaweedfs' own non-local replace (go-bip39 was deleted from GitHub)
replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
GOMOD
cat > "$work/tools.go" <<'GOSRC'
//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
GOSRC
start=$(date +%s)
say "building SeaweedFS ($version) from the Go module proxy (first run only: a few minutes)..."
if ! (cd "$work" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/seaweedfs/seaweedfs/weed) >>"$log" 2>&1; then
    say "the build failed; the last lines of $log:"
    tail -n 30 "$log" >&2
    exit 1
fi
mv "$bin.tmp" "$bin"
say "SeaweedFS ready at $bin ($(( $(date +%s) - start ))s)"
echo "$bin"
