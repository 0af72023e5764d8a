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
# src's Default domain holds SQL users and the LDAP directory's 1,209 people (SOC6's hybrid
# backend); dst reads the same directory as domain ldap_users (SOC7's domain-specific backend).
for what in "project list --long" "user show lina" "keypair list --user alice --os-compute-api-version 2.10" "keypair list --user lina --os-compute-api-version 2.10" \
            "security group list" "network list" "router list" "floating ip list" \
            "image list --long" "volume list --all-projects --long" "server list --all-projects"; do
  echo "\$ openstack --os-cloud src $what"
  # shellcheck disable=SC2086
  openstack --os-cloud src $what || true
done
step "The destination cloud's projects (same IDs as the source) and its LDAP people (new IDs)"
openstack --os-cloud dst project list --long
echo "\$ openstack --os-cloud dst user show lina --domain ldap_users"
openstack --os-cloud dst user show lina --domain ldap_users || true

work=$(mktemp -d /tmp/stackhop-demo.XXXXXX)
journal="$work/journal.sqlite"
archive="$work/src-resources.stackhop"
sh() { echo "\$ stackhop $*"; stackhop --journal "$journal" "$@"; }

step "Export every keypair, quota and security group of src into one archive (API, as admin)"
sh export --from src -o "$archive"
ls -l "$archive"

step "Plan: what importing it into dst would do (changes nothing)"
echo "(--domain-map Default=ldap_users: src's LDAP people are dst's ldap_users people, matched by"
echo " name; the SQL users of Default stay in Default)"
sh plan --to dst "$archive" --domain-map Default=ldap_users || true

step "Import into dst (journaled: a re-run resumes and never duplicates)"
# dst holds a keypair and a group of its own with the same names: reported as conflicts, left alone.
sh import --to dst "$archive" --domain-map Default=ldap_users \
  || echo "(exit $?: the conflicts above are dst's own objects, untouched)"

step "Verify dst against the archive"
sh verify --to dst "$archive" --domain-map Default=ldap_users || echo "(exit $?: differences listed above)"

step "Import again: everything is already there"
sh import --to dst "$archive" --domain-map Default=ldap_users || true

step "The journal"
sh status

step "Images: copy the seeded images from src to dst, same IDs, owners and members mapped, every byte hash-verified"
sh images copy --from src --to dst --all --keep-id || true
openstack --os-cloud dst image list --long

step "Images: move public-tools from store fast to store slow on src (same ID, hash checked), then back"
sh images move-store --cloud src --from-store fast --to-store slow --image public-tools || true
image_stores() {
  openstack --os-cloud src image show public-tools -f json | python3 -c "
import json, sys
image = json.load(sys.stdin)
props = image.get('properties') or {}
print('image', image['id'], 'stores:', props.get('stores'), 'sha512:', props.get('os_hash_value', '')[:16] + '...')"
}
image_stores
sh images move-store --cloud src --from-store slow --to-store fast --image public-tools || true
image_stores

step "Roll the resource import back: dst returns to what it held before"
run_id=$(stackhop --journal "$journal" status -f json | python3 -c '
import json, sys
runs = [r for r in json.load(sys.stdin)["runs"] if r["command"] == "import"]
print(min(runs, key=lambda r: r["started_at"])["id"])')
sh rollback --to dst --run "$run_id"

step "Project migrate: beta with everything it has, in five phases (volumes by rbd and by ssh stream)"
echo "(Cinder creates volumes in the token's project: --grant-role gives the operator a role in dst's"
echo " beta for the run, journaled, and takes it back at its end.)"
sh project migrate --from src --to dst --project beta --all-volumes -o "$work/project-beta" \
  --grant-role admin --backup-to "$work/backups" \
  || echo "(exit $?: frank's keypair stays behind: frank has no account on dst, the report says so)"

step "Putting dst back as the seed left it, so that \`make test\` starts from a known state"
python -m testbed undo --journal "$journal"

step "The volume backups written from the same read: checked without any cloud"
for backup in "$work"/backups/*.tar; do sh volumes backup verify "$backup"; done

step "Done. Journal and archives: $work; the project report: $work/project-beta/report.json, usage report: $work/project-beta/usage/report.html"
