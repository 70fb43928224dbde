#!/usr/bin/env bash
# The whole test suite (after scripts/setup.sh). Extra arguments go to pytest (after ours, so they win:
# `make test ARGS="-n 0"` runs serially).
#
# In parallel with pytest-xdist: most of the suite waits on processes (Postgres, pulumi, apps), so more
# workers than cores pay. PULUMI_DBOS_TEST_WORKERS sets how many (default 4, measured on 2 cores; see
# docs/development.md); tests/support/parallel.py decides which tests must share a worker, and hands
# the longest out first (hence --no-loadscope-reorder).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source .state/env
exec python -m pytest -p no:cacheprovider -n "${PULUMI_DBOS_TEST_WORKERS:-4}" --dist loadgroup \
    --no-loadscope-reorder "$@"
