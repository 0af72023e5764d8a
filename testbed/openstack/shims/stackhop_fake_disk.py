"""Nova's fake driver keeping each instance's root disk as a file, where libvirt keeps it.

Why it exists: ``stackhop servers migrate`` copies an image-booted server's
ephemeral root disk from its compute host over ssh (issue 19). Nova's
``FakeDriver`` runs no guest and writes nothing, so there would be no disk to
copy; and it keeps its instances in memory only, so after a nova-compute
restart, stopping or starting any older server fails with
``InstanceNotFound``. This subclass adds the files a libvirt compute host
has, and nothing more:

- ``spawn`` of an image-booted instance writes ``<instances_path>/<uuid>/disk``:
  raw, the image's bytes as Glance serves them (no format conversion; through
  the compute's ``[glance]``, so the legacy compute reads the legacy Glance),
  then extended sparse to the flavor's root disk. An existing disk is never
  replaced: a hard reboot of an unknown instance spawns again. A volume-booted
  instance gets the directory only.
- Each instance directory holds :data:`STATE_FILE` (name, power state,
  resources claimed); ``power_off``/``power_on`` rewrite it and ``init_host``
  rebuilds the driver's registry from these files.
- ``destroy`` with ``destroy_disks`` (delete, shelve-offload, rebuild) removes
  the directory.

nova-compute imports its driver as ``nova.virt.<compute_driver>`` only: it
runs through :mod:`stackhop_nova_compute`, which registers this module as
``nova.virt.stackhop_fake_disk``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nova.conf
from nova import block_device
from nova.virt import driver, fake, images
from oslo_log import log as logging
from oslo_utils import units

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

#: In each instance directory: what the in-memory registry needs after a restart.
STATE_FILE = "fake-driver-state.json"


def _instance_dir(uuid: str) -> Path:
    return Path(CONF.instances_path) / uuid


def _boots_from_volume(instance: Any, block_device_info: Any) -> bool:
    """As libvirt decides it: a root (boot index 0) volume mapping, or no image at all."""
    mapping = driver.block_device_info_get_mapping(block_device_info)
    return block_device.get_root_bdm(mapping) is not None or not instance.image_ref


def _make_disk(context: Any, instance: Any, disk: Path) -> None:
    """The image's bytes, extended sparse to the flavor's root disk; made aside, then renamed."""
    if disk.exists():
        return  # the instance's own disk: whatever it holds now is its content
    partial = disk.with_name(disk.name + ".part")
    images.fetch(context, instance.image_ref, str(partial))
    root = instance.flavor.root_gb * units.Gi
    if partial.stat().st_size < root:
        os.truncate(partial, root)
    os.replace(partial, disk)


class DiskFakeDriver(fake.FakeDriverWithoutFakeNodes):
    """``FakeDriverWithoutFakeNodes`` with root disks and a registry that survives restarts."""

    def init_host(self, host: str) -> None:
        super().init_host(host)
        for path in sorted(Path(CONF.instances_path).glob(f"*/{STATE_FILE}")):
            uuid = path.parent.name
            state = json.loads(path.read_text())
            self.instances[uuid] = fake.FakeInstance(state["name"], state["power_state"], uuid)
            self.resources.claim(
                vcpus=state["vcpus"], mem=state["memory_mb"], disk=state["root_gb"]
            )
        LOG.info("%d instance(s) found in %s", len(self.instances), CONF.instances_path)

    def spawn(self, context, instance, image_meta, injected_files, admin_password,
              allocations, network_info=None, block_device_info=None, power_on=True,
              accel_info=None):
        directory = _instance_dir(instance.uuid)
        directory.mkdir(parents=True, exist_ok=True)
        if not _boots_from_volume(instance, block_device_info):
            _make_disk(context, instance, directory / "disk")
        super().spawn(context, instance, image_meta, injected_files, admin_password,
                      allocations, network_info=network_info,
                      block_device_info=block_device_info, power_on=power_on,
                      accel_info=accel_info)
        self._save_state(instance)

    def power_off(self, instance, timeout=0, retry_interval=0):
        super().power_off(instance, timeout, retry_interval)
        self._save_state(instance)

    def power_on(self, context, instance, network_info, block_device_info=None,
                 accel_info=None, share_info=None):
        super().power_on(context, instance, network_info, block_device_info=block_device_info,
                         accel_info=accel_info, share_info=share_info)
        self._save_state(instance)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        super().destroy(context, instance, network_info, block_device_info=block_device_info,
                        destroy_disks=destroy_disks, destroy_secrets=destroy_secrets)
        directory = _instance_dir(instance.uuid)
        if destroy_disks:
            if directory.exists():
                shutil.rmtree(directory)
        else:
            # The disk stays (as on a libvirt host); the guest is gone from this host, so a
            # restart must not register it again.
            (directory / STATE_FILE).unlink(missing_ok=True)

    def _save_state(self, instance: Any) -> None:
        flavor = instance.flavor
        state = {
            "name": self.instances[instance.uuid].name,
            "power_state": self.instances[instance.uuid].state,  # nova.compute.power_state
            "vcpus": flavor.vcpus,
            "memory_mb": flavor.memory_mb,
            "root_gb": flavor.root_gb,
        }
        path = _instance_dir(instance.uuid) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_text(json.dumps(state) + "\n")
        os.replace(partial, path)
