"""Byte movers: one contract (:mod:`stackhop.transfer.base`) and its sources and destinations.

``glance``
    image download (source) and upload (destination) through the Glance v2 API.

Volumes (RBD, block devices over ssh) plug into the same :func:`copy`.
"""

from __future__ import annotations

from stackhop.transfer.base import (
    DEFAULT_CHUNK_SIZE,
    Chunk,
    Destination,
    Digest,
    HashingDestination,
    Source,
    TransferResult,
    chunk_filters,
    copy,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Chunk",
    "Destination",
    "Digest",
    "HashingDestination",
    "Source",
    "TransferResult",
    "chunk_filters",
    "copy",
]
