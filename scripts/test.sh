#!/usr/bin/env bash
# The whole test suite (after scripts/setup.sh): ruff and mypy --strict, then pytest. Extra arguments go to pytest (after ours, so they win:
# `make test ARGS="-n 0"` runs serially).
#
# In parallel with pytest-xdist: most of the suite waits on processes (Postgres, pulumi, apps), so more
# workers than cores pay. PULUMI_DBOS_TEST_WORKERS sets how many (default 5, measured on 2 cores; see
# docs/development.md); tests/support/parallel.py decides which tests must share a worker, and hands
# the longest out first (hence --no-loadscope-reorder).
#
# The tests' throwaway directories (data dirs, stacks, backends) go on a tmpfs of their own when we can
# mount one (as root), else in $TMPDIR: the suite makes and deletes ~2000 cluster copies and runs ~150
# initdb; on a disk (this machine's is ext4 mounted with online `discard`) the kernel's share of that was
# a third of the suite's CPU. PULUMI_DBOS_TEST_TMPFS=0 keeps them on disk.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source .state/env

scratch=""
template_cache=""
cleanup() {
    if [[ -n "$template_cache" ]]; then rm -rf "$template_cache"; fi
    if [[ -n "$scratch" ]]; then
        umount -l "$scratch" 2>/dev/null || true
        rmdir "$scratch" 2>/dev/null || true
    fi
}
trap cleanup EXIT
if [[ "${PULUMI_DBOS_TEST_TMPFS:-1}" != 0 && "$(id -u)" == 0 ]]; then
    scratch="$(mktemp -d /tmp/pt.XXXXXX)"
    # half the memory at most (tmpfs pages are memory); a short path: Unix socket paths are limited to 107 bytes
    if mount -t tmpfs -o size=50%,mode=1777 pulumi-dbos-tests "$scratch" 2>/dev/null; then
        export TMPDIR="$scratch"
    else
        rmdir "$scratch"; scratch=""
    fi
fi

# the house style first: lint and strict types (seconds; a failure stops the run before the long part)
echo "test: ruff check, mypy --strict" >&2
ruff check provider tests stacks bench
mypy

# one initdb for the whole run instead of one per data dir (~180 of them, ~0.3 s of CPU each): the engine's
# machine-wide template cache (engine/local/template.py), in the run's scratch space
if [[ -z "${PULUMI_DBOS_TEMPLATE_CACHE:-}" ]]; then
    template_cache="$(mktemp -d "${TMPDIR:-/tmp}/template-cache.XXXXXX")"
    export PULUMI_DBOS_TEMPLATE_CACHE="$template_cache"
fi

# no warm pool (the engine's default keeps two copies of the template ready per data dir): the ~180 data dirs of a
# run mostly provision one or two instances each, so the copies were made by a refill process, then deleted
# unused (~0.3 s of CPU per data dir). A provision copies the template itself then; the pool's own tests
# (tests/integration/test_pool.py, test_autobackup.py) set their size and take from it
export PULUMI_DBOS_POOL_SIZE="${PULUMI_DBOS_POOL_SIZE:-0}"

# the pulumi CLI (Go) is started ~1500 times, each for a second or two: collecting its garbage costs more
# CPU than the memory it frees is worth (without: ~150 MB at most, measured)
export GOGC="${GOGC:-off}"

python -m pytest -p no:cacheprovider -n "${PULUMI_DBOS_TEST_WORKERS:-5}" --dist loadgroup \
    --no-loadscope-reorder "$@"
