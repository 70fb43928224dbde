#!/usr/bin/env bash
# Print the directory holding a usable `pulumi` CLI (with the Python language host).
#
# 1. A pulumi already on PATH (a user's normal install) is used as it is.
# 2. Else the cache ${PULUMI_DBOS_CACHE:-~/.cache/pulumi-dbos}/pulumi-v<version>-<hash>/bin, if complete:
#    <hash> is of tools/langhost's Go sources, go.mod, go.sum, tools/pulumi-bin (and the version), so a change to the
#    language host's source is a new directory, built once, and a checkout with the old source keeps its own
#    (several checkouts share one cache; CI reuses it).
# 3. Else build it there from the Go module proxy (no binary downloads):
#    - `pulumi` from a wrapper module requiring github.com/pulumi/pulumi/pkg/v3 and sdk/v3 at
#      the same version (repeating their non-local `replace` lines), `go build`, into
#      pulumi-v<version>/bin (keyed by version only: the CLI does not change with our sources) and linked
#      into the hashed directory;
#    - `pulumi-language-python` from tools/langhost (this project's small language host,
#      built on sdk/v3: the upstream host module is not served by the proxy);
#    - the two scripts the CLI runs beside it, from tools/pulumi-bin.
# All progress goes to stderr; stdout is only the directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(cat "$here/scripts/pulumi-version")"

root="${PULUMI_DBOS_CACHE:-$HOME/.cache/pulumi-dbos}"
# a pulumi on PATH from this cache (a sourced .state/env) is not a user's install: it may be an older key's
if [ -z "${PULUMI_DBOS_FORCE_BUILD:-}" ] && command -v pulumi >/dev/null 2>&1 \
    && [[ "$(command -v pulumi)" != "$root"/* ]]; then
    dirname "$(command -v pulumi)"
    exit 0
fi

# the language host and scripts are this project's: a change to any of their files is a new cache key
src_hash="$(cd "$here" && { find tools/langhost -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0
    find tools/pulumi-bin scripts/pulumi-version -type f -print0; } | LC_ALL=C sort -z | xargs -0 sha256sum \
    | sha256sum | cut -c1-12)"
cli_dir="$root/pulumi-v$version/bin"       # the CLI alone (built once per version)
cache="$root/pulumi-v$version-$src_hash"
bin="$cache/bin"
stamp="$bin/.complete"
if [ -f "$stamp" ] && [ -x "$bin/pulumi" ] && [ -x "$bin/pulumi-language-python" ]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "ensure-pulumi: Go is needed to build the pulumi CLI (no pulumi on PATH)" >&2; exit 1; }
mkdir -p "$bin" "$cli_dir"
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
if [ ! -x "$cli_dir/pulumi" ] || [ "$("$cli_dir/pulumi" version 2>/dev/null)" != "v$version" ]; then
    echo "ensure-pulumi: building the pulumi CLI v$version from the Go module proxy (first run only, a few minutes)..." >&2
    work="$root/pulumi-v$version/build"
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
        -o "$cli_dir/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    mv "$cli_dir/pulumi.tmp" "$cli_dir/pulumi"
fi
# the CLI beside our language host (it looks for language plugins next to itself and on PATH)
ln -f "$cli_dir/pulumi" "$bin/pulumi.tmp" 2>/dev/null || cp "$cli_dir/pulumi" "$bin/pulumi.tmp"
mv -f "$bin/pulumi.tmp" "$bin/pulumi"
phase "building the Python language host (tools/langhost)" "$here/tools/langhost" \
    go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin/pulumi-language-python.tmp" .
mv -f "$bin/pulumi-language-python.tmp" "$bin/pulumi-language-python"
install -m 0755 "$here/tools/pulumi-bin/pulumi-language-python-exec" "$here/tools/pulumi-bin/pulumi-resource-pulumi-python" "$bin/"
echo "$src_hash" > "$stamp"
echo "ensure-pulumi: pulumi v$version ready in $bin ($(( $(date +%s) - start ))s)" >&2
echo "$bin"
