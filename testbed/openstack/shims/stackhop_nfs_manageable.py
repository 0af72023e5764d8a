"""Cinder's NFS driver with "manage existing" for files already on the share.

Upstream ``NfsDriver`` cannot adopt an existing file, although Cinder ships
the generic implementation for RemoteFS drivers
(``RemoteFSManageableVolumesMixin``: manage, unmanage, list manageable).
Mixing it in is all this driver does. Reference a file as
``source-name=<share>/<path on the share>``.
"""

from __future__ import annotations

from cinder.volume.drivers import nfs, remotefs


class ManageableNfsDriver(remotefs.RemoteFSManageableVolumesMixin, nfs.NfsDriver):
    """``NfsDriver`` + Cinder's RemoteFS manageable-volumes mixin."""
