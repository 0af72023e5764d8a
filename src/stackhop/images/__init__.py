"""Image work: move between Glance stores (:mod:`.move_store`, :mod:`.recreate`), copy between
clouds (:mod:`.copy`). Sits beside the engine: uses kinds, transfer and the journal."""

from __future__ import annotations
