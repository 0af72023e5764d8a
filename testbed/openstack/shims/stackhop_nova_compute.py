"""nova-compute on the testbed's disk-keeping fake driver (:mod:`stackhop_fake_disk`).

Nova imports its ``compute_driver`` as ``nova.virt.<value>`` and nothing
else, so a driver outside the nova package needs a name there. This is
nova-compute's own console script plus that name: it registers
:mod:`stackhop_fake_disk` as ``nova.virt.stackhop_fake_disk``, so
``compute_driver = stackhop_fake_disk.DiskFakeDriver`` loads it. Run as
``python -m stackhop_nova_compute --config-file ...``.
"""

from __future__ import annotations

import sys

# First, as nova-compute's own script does: this import monkey-patches the standard library.
from nova.cmd import compute


def main() -> None:
    import stackhop_fake_disk  # after the monkey-patching

    sys.modules["nova.virt.stackhop_fake_disk"] = stackhop_fake_disk
    # oslo.config names the program after argv[0]: keep the console script's name.
    sys.argv[0] = "nova-compute"
    compute.main()


if __name__ == "__main__":
    main()
