#!/usr/bin/env bash
# `make demo`, after the testbed is up and seeded: show both clouds answering and what the source holds.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source "${STACKHOP_TESTBED_DIR:-/var/lib/stackhop-testbed}/env.sh"
export PATH="$PWD/.venv/bin:$PATH" PYTHONWARNINGS=ignore

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "stackhop $(stackhop --version 2>/dev/null | awk '{print $NF}'): the configured clouds"
stackhop clouds

step "Both clouds answer: services, API versions, what stackhop needs"
stackhop clouds --check src dst

step "What the source cloud holds (the seeded tenant data)"
for what in "project list --long" "user list --domain ldap" "keypair list --user alice --os-compute-api-version 2.10" "keypair list --user lina --user-domain ldap --os-compute-api-version 2.10" \
            "security group list" "network list" "router list" "floating ip list" \
            "image list --long" "volume list --all-projects --long" "server list --all-projects"; do
  echo "\$ openstack --os-cloud src $what"
  # shellcheck disable=SC2086
  openstack --os-cloud src $what || true
done
step "The destination cloud's projects (same IDs as the source)"
openstack --os-cloud dst project list --long

step "Next: migrate with stackhop (see README.md for the tour)"
