#!/usr/bin/env bash
# Print the directory holding a usable `pulumi` CLI (with the Python language host).
#
# 1. A pulumi already on PATH (a user's normal install) is used as it is.
# 2. Else the cache ${PULUMI_DBOS_CACHE:-~/.cache/pulumi-dbos}/pulumi-v<version>/bin, if complete.
# 3. Else build it there from the Go module proxy (no binary downloads):
#    - `pulumi` from a wrapper module requiring github.com/pulumi/pulumi/pkg/v3 and sdk/v3 at
#      the same version (repeating their non-local `replace` lines), `go build`;
#    - `pulumi-language-python` from tools/langhost (this project's small language host,
#      built on sdk/v3: the upstream host module is not served by the proxy);
#    - the two scripts the CLI runs beside it, from tools/pulumi-bin.
# All progress goes to stderr; stdout is only the directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(cat "$here/scripts/pulumi-version")"

if [ -z "${PULUMI_DBOS_FORCE_BUILD:-}" ] && command -v pulumi >/dev/null 2>&1; then
    dirname "$(command -v pulumi)"
    exit 0
fi

cache="${PULUMI_DBOS_CACHE:-$HOME/.cache/pulumi-dbos}/pulumi-v$version"
bin="$cache/bin"
stamp="$bin/.complete"
# the language host and scripts are this project's: rebuild when they change
src_hash="$(cat "$here/tools/langhost/main.go" "$here/tools/langhost/go.mod" "$here"/tools/pulumi-bin/* "$here/scripts/pulumi-version" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$src_hash" ] && [ -x "$bin/pulumi" ]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "ensure-pulumi: Go is needed to build the pulumi CLI (no pulumi on PATH)" >&2; exit 1; }
mkdir -p "$bin"
start=$(date +%s)
# one line per phase with its time; the go tool's own output (hundreds of "go: downloading") in a log
log="$cache/build.log"
phase() {  # phase NAME DIR COMMAND...: run it in DIR, its output to the log; on failure the log's tail
    local t0
    t0=$(date +%s)
    echo "ensure-pulumi:   $1..." >&2
    if ! (cd "$2" && "${@:3}") >>"$log" 2>&1; then
        echo "ensure-pulumi: $1 failed; the last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    echo "ensure-pulumi:   $1 done ($(( $(date +%s) - t0 ))s)" >&2
}
: > "$log"
if [ ! -x "$bin/pulumi" ] || [ "$("$bin/pulumi" version 2>/dev/null)" != "v$version" ]; then
    echo "ensure-pulumi: building the pulumi CLI v$version from the Go module proxy (first run only, a few minutes)..." >&2
    work="$cache/build"
    mkdir -p "$work"
    cat > "$work/go.mod" <<GOMOD
module pulumi-dbos.local/pulumicli

go 1.26.6

require (
	github.com/pulumi/pulumi/pkg/v3 v$version
	github.com/pulumi/pulumi/sdk/v3 v$version
)

// the non-local replace lines of pkg/v3 and sdk/v3 at this version
replace golang.org/x/text => golang.org/x/text v0.39.0

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
GOMOD
    cat > "$work/tools.go" <<'GOSRC'
//go:build tools

package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
GOSRC
    phase "resolving and downloading modules (go mod tidy)" "$work" go mod tidy
    phase "compiling the CLI (go build)" "$work" go build -trimpath \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
        -o "$bin/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    mv "$bin/pulumi.tmp" "$bin/pulumi"
fi
phase "building the Python language host (tools/langhost)" "$here/tools/langhost" \
    go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin/pulumi-language-python.tmp" .
mv "$bin/pulumi-language-python.tmp" "$bin/pulumi-language-python"
install -m 0755 "$here/tools/pulumi-bin/pulumi-language-python-exec" "$here/tools/pulumi-bin/pulumi-resource-pulumi-python" "$bin/"
echo "$src_hash" > "$stamp"
echo "ensure-pulumi: pulumi v$version ready in $bin ($(( $(date +%s) - start ))s)" >&2
echo "$bin"
