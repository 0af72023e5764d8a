"""stackhop: move a tenant's world between OpenStack clouds, resumably and verifiably."""

from __future__ import annotations

__version__ = "0.1.0"
