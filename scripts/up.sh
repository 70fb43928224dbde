#!/usr/bin/env bash
# `pulumi up` of the example stack on a local file:// backend, then the stack outputs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
source .state/env
stack="${STACK:-dev}"
mkdir -p .state/backend
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$here/.state/backend}"
# A throwaway passphrase for the local example only: it encrypts the secrets in
# stacks/Pulumi.dev.yaml and in the local state. Use your own for real stacks.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-local-throwaway-passphrase}"
pulumi stack select --create --non-interactive "$stack" >/dev/null
pulumi up --yes --non-interactive --stack "$stack"
echo
echo "Stack outputs ($stack):"
pulumi stack output --json --stack "$stack"
