#!/usr/bin/env bash
# Install everything stackhop and its testbed need on Debian 12, as root. Idempotent:
# when nothing changed since the last run, it returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  mariadb-server rabbitmq-server            # shared SQL and message queue of both clouds
  ceph-mon ceph-mgr ceph-osd ceph-common    # one small Ceph cluster per cloud
  python3-rbd python3-rados                 # rados/rbd bindings (none usable on PyPI)
  zookeeper default-jre-headless            # the SDN controller's ZooKeeper
  openssh-server openssh-client             # the storage hosts volume streaming runs on
  nfs-common qemu-utils curl                # Cinder's NFS driver helpers, qemu-img
  chromium                                  # headless browser: the usage report's rendering test
  slapd ldap-utils                          # the LDAP directory behind both Keystones (issue 21)
  libldap2-dev libsasl2-dev                 # python-ldap builds from source (no wheels on PyPI)
  postgresql                                # src's databases on PostgreSQL, Liberty shapes (issue 21)
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  # Packages must not start their system services: the testbed starts its own.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.stackhop-setup
want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: creating .venv (project, OpenStack services, pinned in requirements/constraints.txt)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q -r requirements/bootstrap.txt
.venv/bin/pip install -q -c requirements/constraints.txt -r requirements/testbed.txt
# The project itself, built with the pinned setuptools of .venv (no unpinned build env).
.venv/bin/pip install -q --no-build-isolation -c requirements/constraints.txt -e '.[dev]'
# Ceph's Python bindings exist only as Debian packages: expose just those two
# modules (not the whole of dist-packages) to the venv, for the rbd volume method.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
mkdir -p .venv/ceph-bindings
for m in rados rbd; do
  ln -sf /usr/lib/python3/dist-packages/$m.cpython-311-x86_64-linux-gnu.so .venv/ceph-bindings/
done
echo "$PWD/.venv/ceph-bindings" > "$site/stackhop-ceph-bindings.pth"
echo "$want" > "$stamp"
echo "setup: done"
