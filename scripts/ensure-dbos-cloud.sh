#!/usr/bin/env bash
# Print the path of the official DBOS Cloud CLI (`dbos-cloud`, npm @dbos-inc/dbos-cloud), pinned,
# installing it on first use into ${PULUMI_DBOS_CACHE:-~/.cache/pulumi-dbos}/dbos-cloud-<version>.
# The conformance tests (tests/conformance) run it against `pulumi-dbos serve`.
#   - node/npm missing: Debian's `nodejs npm` are installed with apt (as setup.sh does for postgresql);
#   - the install goes to a temporary dir renamed into place, so an interrupted or concurrent run
#     never leaves a half-installed CLI behind.
# Quiet when present; progress goes to stderr, stdout is only the path.
set -euo pipefail
version="2.10.24"

say() { echo "ensure-dbos-cloud: $*" >&2; }

dir="${PULUMI_DBOS_CACHE:-$HOME/.cache/pulumi-dbos}/dbos-cloud-$version"
bin="$dir/node_modules/.bin/dbos-cloud"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "installing Debian's nodejs and npm (to install the dbos-cloud CLI)..."
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >&2
    command -v npm >/dev/null 2>&1 || { say "npm still not found after installing 'nodejs npm'"; exit 1; }
fi

say "installing @dbos-inc/dbos-cloud@$version from the npm registry (first run only)..."
mkdir -p "$(dirname "$dir")"
tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
NO_UPDATE_NOTIFIER=1 npm install --prefix "$tmp" --no-audit --no-fund --no-update-notifier \
    --loglevel=error "@dbos-inc/dbos-cloud@$version" >&2
[ -x "$tmp/node_modules/.bin/dbos-cloud" ] || { say "npm install did not produce node_modules/.bin/dbos-cloud"; exit 1; }
# another run may have finished first: keep the one in place
if [ ! -x "$bin" ]; then
    rm -rf "$dir"
    mv "$tmp" "$dir"
fi
echo "$bin"
