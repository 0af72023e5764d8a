"""A fault-injecting reverse proxy in front of a cloud's APIs (aiohttp), for tests and chaos runs.

One listener on 127.0.0.1 per upstream endpoint (Keystone, Nova, Neutron,
Cinder, Glance, Placement). Every request is forwarded to its upstream, and
every JSON answer has the upstreams' base URLs rewritten to the proxy's, so
the service catalog a token carries, version documents and ``next`` links all
lead back through the proxy: a client given only the proxied ``auth_url``
reaches every service through it.

Per request, a seeded random choice (:class:`Faults`) decides, at the given
rate, one fault:

``500`` / ``502`` / ``503``
    answered at once, the request is not forwarded;
``429``
    answered with ``Retry-After`` (seconds), not forwarded;
``reset``
    the connection is closed before any byte of an answer, not forwarded;
``stall``
    nothing is answered for ``stall_seconds`` (past the client's timeout),
    then the connection is closed; not forwarded;
``drop``
    **forwarded and applied upstream**, then the connection is closed
    without the answer: the client cannot know that its request took
    effect (the case a retried POST turns into a duplicate).

Which requests may be hit is narrowed by ``methods`` and ``paths`` (regular
expressions on the path); a request that arrives with a token is never
faulted before ``after`` requests have passed. Every decision is kept in
:attr:`FaultProxy.log`, so a test can assert what it survived.

The proxy runs its own asyncio loop in a daemon thread; use it as a context
manager, or ``start()``/``stop()``. ``python -m tests.support.faultproxy``
runs one from the command line for ``bench/chaos.py`` style runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

FAULTS = ("500", "502", "503", "429", "reset", "stall", "drop")
#: Faults whose request never reaches the upstream (safe to resend).
NOT_FORWARDED = frozenset({"500", "502", "503", "429", "reset", "stall"})
#: Request headers not passed on (hop-by-hop, or recomputed by the client session).
#: Request bodies up to this size are read whole before they are forwarded; larger ones
#: are streamed.
STREAM_ABOVE = 1 << 20

_SKIP_REQUEST = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}
)
_SKIP_RESPONSE = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
)


@dataclass(frozen=True)
class Faults:
    """What to inject: ``rate`` of the eligible requests get one of ``kinds``, seeded."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULTS
    seed: int = 0
    #: HTTP methods that may be faulted (upper case); empty: every method.
    methods: frozenset[str] = frozenset()
    #: Regular expressions; a request whose path matches none is never faulted. Empty: all.
    paths: tuple[str, ...] = ()
    #: Upstream ports that may be faulted; empty: every upstream.
    ports: frozenset[int] = frozenset()
    retry_after: int = 1
    stall_seconds: float = 30.0
    #: Faults certain to happen: ``(method, path regex, fault)``, each spent on the first
    #: request that matches it (before the random choice), e.g. the first
    #: ``POST .../security-groups`` answered never (``drop``).
    script: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        unknown = (set(self.kinds) | {fault for _, _, fault in self.script}) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {self.rate}")


@dataclass(frozen=True)
class Decision:
    """One request the proxy saw and what it did with it (``fault`` None: passed through)."""

    port: int
    method: str
    path: str
    fault: str | None
    status: int | None = None


@dataclass
class FaultProxy:
    """Proxies each ``upstream`` (``http://127.0.0.1:PORT``, no path) through a port of its own."""

    upstreams: Iterable[str]
    faults: Faults = field(default_factory=Faults)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.upstreams = [u.rstrip("/") for u in self.upstreams]
        self.log: list[Decision] = []
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        #: upstream base URL -> proxy base URL (filled by start()).
        self.routes: dict[str, str] = {}
        self.enabled = True
        self._script = list(self.faults.script)

    # -- public ----------------------------------------------------------

    def url(self, upstream: str) -> str:
        """The proxy's base URL for ``upstream`` (e.g. a proxied ``auth_url`` base)."""
        return self.routes[upstream.rstrip("/")]

    def rewrite(self, text: str) -> str:
        """``text`` with every upstream base URL replaced by its proxy URL."""
        for upstream, proxied in self.routes.items():
            text = text.replace(upstream, proxied)
        return text

    @property
    def unspent(self) -> list[tuple[str, str, str]]:
        """The scripted faults no request has matched yet."""
        with self._lock:
            return list(self._script)

    def faulted(self, *kinds: str) -> list[Decision]:
        """The decisions that injected a fault (of ``kinds``, or any)."""
        with self._lock:
            return [d for d in self.log if d.fault and (not kinds or d.fault in kinds)]

    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # reported to start()'s caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._unbind())
            loop.close()

        self._thread = threading.Thread(target=serve, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the loop -------------------------------------------------

    async def _bind(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None, sock_read=600)
        )
        for upstream in self.upstreams:
            app = web.Application(client_max_size=1024**4)
            app.router.add_route("*", "/{tail:.*}", self._handler(upstream))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            site = web.SockSite(runner, sock)
            await site.start()
            self._runners.append(runner)
            self.routes[upstream] = f"http://{self.host}:{sock.getsockname()[1]}"

    async def _unbind(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _choose(self, port: int, request: web.Request) -> str | None:
        f = self.faults
        if not self.enabled:
            return None
        with self._lock:
            for i, (method, path, fault) in enumerate(self._script):
                if request.method == method and re.search(path, request.path):
                    del self._script[i]
                    return fault
        if f.rate <= 0.0:
            return None
        if f.methods and request.method not in f.methods:
            return None
        if f.ports and port not in f.ports:
            return None
        if f.paths and not any(re.search(p, request.path) for p in f.paths):
            return None
        with self._lock:
            if self._rng.random() >= f.rate:
                return None
            return self._rng.choice(f.kinds)

    def _record(self, decision: Decision) -> None:
        with self._lock:
            self.log.append(decision)

    def _handler(self, upstream: str) -> Any:
        port = int(upstream.rsplit(":", 1)[1].split("/")[0])

        async def handle(request: web.Request) -> web.StreamResponse:
            fault = self._choose(port, request)
            if fault in {"500", "502", "503", "429"}:
                status = int(fault)
                self._record(Decision(port, request.method, request.path, fault, status))
                headers = {"Retry-After": str(self.faults.retry_after)} if status == 429 else {}
                return web.json_response(
                    {"error": {"code": status, "message": f"injected {status}"}},
                    status=status,
                    headers=headers,
                )
            if fault == "reset":
                self._record(Decision(port, request.method, request.path, fault))
                _abort(request)
                return web.Response(status=599)  # never sent: the transport is gone
            if fault == "stall":
                self._record(Decision(port, request.method, request.path, fault))
                await asyncio.sleep(self.faults.stall_seconds)
                _abort(request)
                return web.Response(status=599)
            return await self._forward(upstream, port, request, drop=fault == "drop")

        return handle

    async def _forward(
        self, upstream: str, port: int, request: web.Request, *, drop: bool
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
        # A sized body is sent sized (uWSGI-served APIs do not read chunked bodies): a small
        # one read whole, a large one (an image upload of GiBs) streamed on with its length
        # kept, so the proxy's memory stays flat; a chunked one streams on, chunked.
        data: Any = None
        if request.content_length is not None and request.content_length <= STREAM_ABOVE:
            # An empty body goes on as none: aiohttp would label b"" octet-stream, and Nova
            # refuses a DELETE with that Content-Type (415).
            data = await request.read() or None
        elif request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
            data = request.content
        elif request.body_exists:
            data = request.content
        async with self._session.request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as answer:
            out_headers = _response_headers(answer.headers, self.rewrite)
            if drop:
                async for _ in answer.content.iter_chunked(1 << 20):
                    pass  # the upstream applied it; the client never learns
                self._record(Decision(port, request.method, request.path, "drop", answer.status))
                _abort(request)
                return web.Response(status=599)
            self._record(Decision(port, request.method, request.path, None, answer.status))
            if "json" in answer.headers.get("Content-Type", ""):
                body = self.rewrite((await answer.read()).decode("utf-8"))
                return web.Response(status=answer.status, headers=out_headers, text=body)
            response = web.StreamResponse(status=answer.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in answer.content.iter_chunked(1 << 20):
                await response.write(chunk)
            await response.write_eof()
            return response


def _response_headers(headers: Mapping[str, str], rewrite: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key.lower() in _SKIP_RESPONSE:
            continue
        out[key] = rewrite(value) if key.lower() == "location" else value
    return out


def _abort(request: web.Request) -> None:
    """Close the client's connection at once (a reset, no answer)."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST rather than FIN: linger 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def catalog_upstreams(conn: Any) -> set[str]:
    """The base URLs (``scheme://host:port``) of every endpoint in ``conn``'s catalog."""
    from urllib.parse import urlsplit

    bases = set()
    for service in conn.service_catalog:
        for endpoint in service.get("endpoints", []):
            parts = urlsplit(endpoint["url"])
            bases.add(f"{parts.scheme}://{parts.netloc}")
    return bases


def proxied_clouds(
    proxy: FaultProxy, clouds: Mapping[str, Any], names: Iterable[str], *, timeout: float
) -> dict[str, Any]:
    """``clouds.yaml``'s ``clouds:`` entries ``names``, their ``auth_url`` through ``proxy``.

    ``timeout`` becomes the entries' ``api_timeout``: a stalled request then fails
    on the client's side instead of hanging the run.
    """
    out: dict[str, Any] = {}
    for name in names:
        entry = dict(clouds[name])
        auth = dict(entry["auth"])
        auth["auth_url"] = proxy.rewrite(auth["auth_url"])
        entry["auth"] = auth
        entry["api_timeout"] = timeout
        out[name] = entry
    return out


def write_clouds_yaml(
    proxy: FaultProxy, clouds_yaml: Path, out: Path, names: Iterable[str], *, timeout: float
) -> Path:
    """``out``: the clouds of ``clouds_yaml``, plus ``<name>-faulty`` for each of ``names``
    reached through ``proxy``; created 0600 from its first byte (it holds passwords)."""
    base = yaml.safe_load(clouds_yaml.read_text())["clouds"]
    clouds = dict(base)
    for name, entry in proxied_clouds(proxy, base, names, timeout=timeout).items():
        clouds[f"{name}-faulty"] = entry
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"clouds": clouds}, handle)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("upstream", nargs="+", help="base URL, e.g. http://127.0.0.1:15000")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args(argv)
    faults = Faults(rate=args.rate, seed=args.seed, kinds=tuple(args.faults.split(",")))
    with FaultProxy(args.upstream, faults) as proxy:
        for upstream, proxied in proxy.routes.items():
            print(f"{upstream} -> {proxied}", flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
