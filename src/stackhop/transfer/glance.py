"""Glance as a transfer source (an image download) and destination (an image upload).

The upload is one HTTP PUT with a ``Content-Length``: the body is a file-like
object that a thread of the HTTP client reads from a bounded queue fed by
:meth:`GlanceDestination.write`. The destination always holds back the last
chunk until :meth:`~GlanceDestination.commit`, so when the stream's digest
does not match, the PUT is cut short before its last byte: Glance then throws
the partial data away and puts the image back to ``queued``, and no bad copy
ever becomes ``active``. After commit, the destination compares Glance's own
``os_hash_value`` of what it stored with the source's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from openstack import exceptions as sdk_exceptions

from stackhop.errors import IntegrityError, TransientError
from stackhop.transfer.base import Chunk, Digest

UPLOAD_QUEUE = 2
"""Chunks waiting for the HTTP client; with the held-back one this bounds upload memory."""


def image_digest(image: dict[str, Any]) -> Digest | None:
    """The digest Glance declares for an image (``os_hash_algo``/``os_hash_value``), if any."""
    algorithm, value = image.get("os_hash_algo"), image.get("os_hash_value")
    if algorithm and value:
        return Digest(str(algorithm), str(value))
    return None


def get_image(service: Any, image_id: str) -> dict[str, Any] | None:
    """The image's JSON from Glance v2, or None if there is none with this ID."""
    response = service.get(f"/images/{quote(image_id, safe='')}")
    if response.status_code == 404:
        return None
    sdk_exceptions.raise_from_response(response)
    body: dict[str, Any] = response.json()
    return body


class GlanceSource:
    """The data of image ``image_id`` on a cloud, downloaded as a stream."""

    def __init__(self, service: Any, image: dict[str, Any]) -> None:
        """``service`` is ``conn.image``; ``image`` the image's JSON (for size and digest)."""
        self.service = service
        self.image_id = str(image["id"])
        self.label = f"image {self.image_id} ({image.get('name') or 'no name'})"
        self.size: int | None = image.get("size")
        self.declared = image_digest(image)
        self._response: Any = None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        self._response = self.service.get(f"/images/{self.image_id}/file", stream=True)
        sdk_exceptions.raise_from_response(self._response)
        offset = 0
        for data in self._response.iter_content(chunk_size=chunk_size):
            if not data:
                continue
            yield Chunk(offset, data)
            offset += len(data)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None


class _Aborted(Exception):
    """Raised inside the HTTP client's read to cut an upload short."""


class _QueueReader:
    """A file-like body for the upload: ``read`` takes bytes from a bounded queue."""

    def __init__(self, size: int) -> None:
        self.len = size  # requests sends Content-Length from this instead of chunking
        self.slots: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=UPLOAD_QUEUE)
        self._buffer = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        while not self._buffer:
            item = self.slots.get()
            if item is None:
                return b""
            if isinstance(item, BaseException):
                raise _Aborted(str(item))
            self._buffer = memoryview(item)
        if n is None or n < 0:
            n = len(self._buffer)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return bytes(out)


class GlanceDestination:
    """Upload into the existing, ``queued`` image ``image_id`` (optionally into ``store``)."""

    durable_chunks = False

    def __init__(self, service: Any, image_id: str, *, store: str | None = None) -> None:
        self.service = service
        self.image_id = image_id
        self.store = store
        self._body: _QueueReader | None = None
        self._thread: threading.Thread | None = None
        self._held: bytes | None = None
        self._error: BaseException | None = None
        self._status: int | None = None

    def open(self, size: int | None) -> None:
        if size is None:
            raise IntegrityError(
                f"image {self.image_id}: the source declares no size; stackhop uploads with "
                "a known length only"
            )
        self._body = _QueueReader(size)
        headers = {"Content-Type": "application/octet-stream"}
        if self.store:
            headers["X-Image-Meta-Store"] = self.store
        body = self._body

        def upload() -> None:
            try:
                response = self.service.put(
                    f"/images/{self.image_id}/file", data=body, headers=headers
                )
                self._status = response.status_code
                sdk_exceptions.raise_from_response(response)
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc
                # Unblock a writer waiting on a full queue: nobody reads it any more.
                while True:
                    try:
                        body.slots.get_nowait()
                    except queue.Empty:
                        break

        self._thread = threading.Thread(target=upload, name=f"upload {self.image_id}", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> None:
        assert self._body is not None and self._thread is not None
        while True:
            if self._error is not None:
                raise self._failure()
            try:
                self._body.slots.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise self._failure() from None

    def _failure(self) -> BaseException:
        error = self._error
        if isinstance(error, sdk_exceptions.HttpException):
            return error
        return TransientError(
            f"image {self.image_id}: the upload broke off ({error}); re-run to retry"
        )

    def write(self, chunk: Chunk) -> None:
        if self._held is not None:
            self._put(self._held)
        self._held = chunk.data

    def commit(self) -> None:
        if self._held is not None:
            self._put(self._held)
            self._held = None
        self._put(None)
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._failure()

    def abort(self, reason: BaseException) -> None:
        self._held = None
        if self._thread is None or self._body is None:
            return
        if self._thread.is_alive():
            try:
                self._body.slots.put(reason, timeout=5)
            except queue.Full:
                pass  # the client is not reading; joining below waits for its timeout
        self._thread.join(timeout=120)
        # Glance resets an image whose upload broke to ``queued`` (data discarded)
        # asynchronously; wait for it so a retry can upload again at once.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            image = get_image(self.service, self.image_id)
            if image is None or image.get("status") != "saving":
                return
            time.sleep(0.5)

    def verify(self, digest: Digest) -> None:
        image = get_image(self.service, self.image_id)
        stored = image_digest(image or {})
        if stored is None or stored != digest or (image or {}).get("status") != "active":
            raise IntegrityError(
                f"image {self.image_id}: the destination stored data hashing to "
                f"{stored.value[:16] if stored else 'nothing'}..., not {digest.value[:16]}...; "
                "it is being removed, re-run to copy it again"
            )
