#!/usr/bin/env bash
# The whole test suite (after scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source .state/env
exec python -m pytest -p no:cacheprovider "$@"
