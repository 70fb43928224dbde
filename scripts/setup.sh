#!/usr/bin/env bash
# Shared, idempotent set-up for `make up` and `make test`; quiet when all is there.
#   - PostgreSQL server binaries (Debian's `postgresql` package when missing)
#   - the virtualenv .venv with this project installed (editable) and its test extras
#   - the pulumi-dbos wheel the template carries (templates/dbos-python/wheels/, for projects without a checkout)
#   - the pulumi CLI + Python language host (scripts/ensure-pulumi.sh)
#   - etcd-server and openssh-server (Debian: high availability and its real-host tests; sshd is not started)
#   - pgBackRest (Debian), the backup repository; SeaweedFS (built once, scripts/ensure-seaweedfs.sh), the
#     S3-compatible store the durability tests keep a repository in
# Writes .state/env, which the other scripts source (PATH and Pulumi settings).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mkdir -p .state

say() { echo "setup: $*" >&2; }

# --- PostgreSQL server binaries -------------------------------------------------------
have_pg() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_basebackup" ] && return 0
    done
    return 1
}
if ! have_pg; then
    say "installing PostgreSQL server binaries (Debian package 'postgresql')..."
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    have_pg || { say "PostgreSQL binaries still not found after installing 'postgresql'"; exit 1; }
fi
if [ "$(id -u)" -eq 0 ] && ! id -u "${PULUMI_DBOS_RUN_AS:-postgres}" >/dev/null 2>&1; then
    say "creating the unprivileged OS user '${PULUMI_DBOS_RUN_AS:-postgres}' that runs the clusters"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "${PULUMI_DBOS_RUN_AS:-postgres}"
fi

if [ "$(id -u)" -eq 0 ] && ! id -u "${PULUMI_DBOS_APP_USER:-dbosapp}" >/dev/null 2>&1; then
    say "creating the unprivileged OS user '${PULUMI_DBOS_APP_USER:-dbosapp}' that runs the apps"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "${PULUMI_DBOS_APP_USER:-dbosapp}"
fi
# apt_install PACKAGE WHY: Debian's package (an `apt-get update` first only when the install needs it)
apt_install() {
    say "installing $2 (Debian package '$1')..."
    local sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2 || {
        $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2; }
}
# pgBackRest: the backup repository under every instance (engine/local/repo.py)
command -v pgbackrest >/dev/null 2>&1 || apt_install pgbackrest "pgBackRest, the instances' backup repository"
# etcd: the consensus store Patroni elects leaders in (engine/ha; Debian's 3.4 runs with --pre-vote)
command -v etcd >/dev/null 2>&1 || apt_install etcd-server "etcd, high availability's consensus store"
# sshd: tests/ha/test_ssh_hosts.py runs one in each simulated host to reach it as a real host (engine/ha/remote.py).
# Only the program: the system's ssh service is not wanted here, so when the install started it (systemd), it is
# stopped and disabled again (an sshd that was there before is never touched: this runs only when it was missing)
if ! [ -x /usr/sbin/sshd ]; then
    apt_install openssh-server "OpenSSH's server, the HA tests' real-host path"
    if [ -d /run/systemd/system ]; then
        sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
        $sudo_ systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
fi
# bubblewrap: the sandbox of every piece of tenant code under `pulumi-dbos serve` (apps, migrations, builds)
command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap "bubblewrap, the apps' sandbox"
if ! [ -x /usr/bin/python3 ] && [ -z "${PULUMI_DBOS_APP_PYTHON:-}" ]; then
    say "installing Debian's python3 (the apps' interpreter, reachable by their OS user)..."
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >&2
fi

# --- virtualenv -----------------------------------------------------------------------
# Its interpreter: $PYTHON when set, else Debian's python3 when it is 3.10 or newer (built with PGO and LTO:
# measured 11% less CPU than a plain source build such as pyenv's on the unit tests, and the suite is CPU-bound:
# docs/development.md), else the python3 on PATH. Debian's needs python3-venv for `-m venv`.
py="${PYTHON:-}"
if [ -z "$py" ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    py=/usr/bin/python3
    /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv "python3's venv module"
fi
py="${py:-python3}"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$($py -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.base_prefix)')"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.installed 2>/dev/null)" != "$want" ]; then
    say "creating .venv and installing pulumi-dbos with its dependencies..."
    if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" != "$($py -c 'import sys; print(sys.base_prefix)')" ]; then
        rm -rf .venv  # made from another interpreter
    fi
    [ -x .venv/bin/python ] || $py -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e '.[test]' >&2
    echo "$want" > .venv/.installed
fi

# --- the pulumi-dbos wheel the template carries -----------------------------------------
# pulumi-dbos is not on PyPI: `pulumi new` copies templates/dbos-python/wheels/ into a new project, whose
# requirements.txt installs that file, so the project (and its CI) needs no checkout of this repository.
# Rebuilt when the package's sources change (a hash of them, ~3 s with pip's build isolation).
wheel_dir=templates/dbos-python/wheels
wheel_want="$( { find provider -type f -name '*.py' ! -path '*/__pycache__/*' -print0; printf 'pyproject.toml\0README.md\0'; } \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
if [ "$(cat .state/template-wheel 2>/dev/null)" != "$wheel_want" ] || ! compgen -G "$wheel_dir/pulumi_dbos-*.whl" >/dev/null; then
    say "building the pulumi-dbos wheel the template carries ($wheel_dir)..."
    rm -rf "$wheel_dir" && mkdir -p "$wheel_dir"
    .venv/bin/python -m pip wheel -q --no-deps -w "$wheel_dir" . >&2
    rm -rf build
    echo "$wheel_want" > .state/template-wheel
fi

# --- Patroni's interpreter (engine/ha): Debian's python3, which the clusters' OS user can run (the project's
# .venv may live where it cannot reach, e.g. under /root), with Patroni from PyPI ---
patroni_py="$here/.state/patroni/bin/python"
if [ "$(cat .state/patroni/.installed 2>/dev/null)" != "$want" ] && [ -x /usr/bin/python3 ]; then
    say "building Patroni's environment (.state/patroni)..."
    uv=".venv/bin/uv"
    "$uv" venv -q --clear -p /usr/bin/python3 .state/patroni >&2
    VIRTUAL_ENV="$here/.state/patroni" "$uv" pip install -q --compile-bytecode -p "$patroni_py" \
        'patroni[etcd3]>=4.1.5,<5' 'psycopg[binary]>=3.2,<4' >&2
    echo "$want" > .state/patroni/.installed
fi
# only if the clusters' OS user can run it (a checkout under /root cannot be reached): else the engine builds one
# per data dir (engine/ha/patroni.py)
if [ "$(id -u)" -eq 0 ] && ! runuser -u "${PULUMI_DBOS_RUN_AS:-postgres}" -- "$patroni_py" -c 'import patroni' 2>/dev/null; then
    patroni_py=""
fi

# --- pulumi CLI -----------------------------------------------------------------------
pulumi_bin="$(scripts/ensure-pulumi.sh)"

# --- the official DBOS Cloud CLI (npm), for the conformance tests against `pulumi-dbos serve` ---
dbos_cloud="$(scripts/ensure-dbos-cloud.sh)"

# --- SeaweedFS (an S3-compatible store for the backup repository's tests and benches), from the Go module proxy ---
# (tests only: `make up` does not need it; the first build takes ~8 CPU-minutes, then it is cached)
if [ "${PULUMI_DBOS_SETUP_S3:-1}" != 0 ]; then
    weed="$(scripts/ensure-seaweedfs.sh)" || { say "SeaweedFS could not be built: its tests will fail"; weed=""; }
fi

# --- actionlint (tests/unit/test_workflow.py), from the Go module proxy when Go is there; optional ---
actionlint_dir="${PULUMI_DBOS_CACHE:-$HOME/.cache/pulumi-dbos}/actionlint-v1.7.7/bin"
if ! command -v actionlint >/dev/null 2>&1 && [ ! -x "$actionlint_dir/actionlint" ] && command -v go >/dev/null 2>&1; then
    say "building actionlint v1.7.7 from the Go module proxy (once; the workflow test uses it)..."
    mkdir -p "$actionlint_dir"
    GOBIN="$actionlint_dir" go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.7 >.state/actionlint-build.log 2>&1 \
        || say "actionlint could not be built (see .state/actionlint-build.log); its test will be skipped"
fi

cat > .state/env <<ENV
export PATH="$here/.venv/bin:$pulumi_bin:\$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_DBOS_PULUMI_BIN="$pulumi_bin"
export PULUMI_DBOS_DBOS_CLOUD="$dbos_cloud"
export PULUMI_DBOS_WEED="${weed:-}"
export PULUMI_DBOS_PATRONI_PYTHON="$patroni_py"
ENV
