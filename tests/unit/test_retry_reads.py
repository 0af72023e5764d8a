"""Reads are retried below the engine, writes are not: a real keystoneauth session, over real
HTTP, through the fault proxy, in front of a small local server that counts what reaches it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from aiohttp import web
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import plugin
from keystoneauth1 import session as ksa_session
from tests.support.faultproxy import FaultProxy, Faults

from stackhop.retry import RetryPolicy, retry_reads

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


class Upstream:
    """An HTTP server on 127.0.0.1 that answers ``{"ok": n}`` and counts requests by method."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen[request.method] += 1
        return web.json_response({"ok": self.seen[request.method]})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._loop.run_until_complete(web.SockSite(runner, sock).start())
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> Upstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def _session(timeout: float = 2.0) -> ksa_session.Session:
    sess = ksa_session.Session(timeout=timeout)
    retry_reads(sess, FAST)
    return sess


def test_a_read_survives_5xx_429_reset_and_stall(upstream: Upstream) -> None:
    script = tuple(("GET", "/thing", f) for f in ("503", "429", "reset"))
    faults = Faults(script=script, retry_after=0)
    with FaultProxy([upstream.url], faults) as proxy:
        answer = _session().get(proxy.url(upstream.url) + "/thing")
        assert answer.json() == {"ok": 1}
        assert [d.fault for d in proxy.faulted()] == ["503", "429", "reset"]
        assert proxy.unspent == []
    assert upstream.seen["GET"] == 1


def test_a_stalled_read_is_retried_after_the_client_timeout(upstream: Upstream) -> None:
    faults = Faults(script=(("GET", "/slow", "stall"),), stall_seconds=5)
    with FaultProxy([upstream.url], faults) as proxy:
        answer = _session(timeout=0.5).get(proxy.url(upstream.url) + "/slow")
        assert answer.json() == {"ok": 1}
        assert [d.fault for d in proxy.faulted()] == ["stall"]


def test_a_write_whose_answer_is_lost_is_not_sent_again(upstream: Upstream) -> None:
    faults = Faults(script=(("POST", "/things", "drop"),))
    with FaultProxy([upstream.url], faults) as proxy:
        with pytest.raises(ksa_exceptions.ConnectionError):
            _session().post(proxy.url(upstream.url) + "/things", json={"a": 1})
    # Applied once upstream, and the session did not repeat it: the engine decides (after a lookup).
    assert upstream.seen["POST"] == 1


def test_reads_give_up_after_the_policy_with_the_last_answer(upstream: Upstream) -> None:
    faults = Faults(script=tuple(("GET", "/down", "503") for _ in range(FAST.max_attempts)))
    with FaultProxy([upstream.url], faults) as proxy:
        with pytest.raises(ksa_exceptions.ServiceUnavailable):
            _session().get(proxy.url(upstream.url) + "/down")
        assert len(proxy.faulted("503")) == FAST.max_attempts
    assert upstream.seen["GET"] == 0


def test_json_answers_lead_back_through_the_proxy(upstream: Upstream) -> None:
    with FaultProxy([upstream.url]) as proxy:
        assert proxy.rewrite(f'{{"href": "{upstream.url}/v3"}}') == (
            f'{{"href": "{proxy.url(upstream.url)}/v3"}}'
        )


def test_an_http_error_names_the_services_message_on_one_line() -> None:
    """A Neutron 409's reason (which address is in use) reaches the error line: openstacksdk
    keeps only the status in ``message``. Built from a real ``requests.Response`` object."""
    import json as json_module

    import requests
    from openstack import exceptions as sdk_exceptions

    from stackhop.retry import error_text

    response = requests.Response()
    response.status_code = 409
    response.reason = "Conflict"
    response.url = "http://127.0.0.1:9696/v2.0/ports"
    response.headers["content-type"] = "application/json"
    body = {"NeutronError": {"type": "IpAddressInUse", "detail": "",
                             "message": "IP address 10.0.0.5 already allocated\nin subnet s1."}}
    response._content = json_module.dumps(body).encode()
    response.request = requests.Request("POST", response.url).prepare()
    try:
        sdk_exceptions.raise_from_response(response)
    except sdk_exceptions.HttpException as exc:
        text = error_text(exc)
    assert text.startswith("ConflictException: 409")
    assert "IP address 10.0.0.5 already allocated" in text and "\n" not in text
    assert error_text(ValueError("plain")) == "ValueError: plain"


class _TokenPlugin(plugin.BaseAuthPlugin):
    """Asks ``url``/v3/auth/tokens for a token, as keystoneauth's password plugin does (the
    small server here is no Keystone; what counts is the request and its retries)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def get_token(self, session: ksa_session.Session, **kwargs: object) -> str:
        session.post(self.url + "/v3/auth/tokens", json={}, authenticated=False)
        return "token"


class _Connection:
    """What :func:`clouds.scoped_connection` asks of an openstacksdk connection: its
    ``connect_as`` gives a new connection with a new keystoneauth session (the testbed's real
    Keystone cannot be made to fail the project-scoped token request only)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.current_project_id = "admin-project"

    def connect_as(self, **_: object) -> _Connection:
        scoped = _Connection(self.url)
        scoped.session = ksa_session.Session(auth=_TokenPlugin(self.url), timeout=2)  # type: ignore[attr-defined]
        return scoped


def test_a_busy_keystone_is_waited_out_for_a_project_scoped_token(upstream: Upstream) -> None:
    from stackhop.clouds import scoped_connection

    faults = Faults(script=(("POST", "/v3/auth/tokens", "503"),) * 2, retry_after=0)
    with FaultProxy([upstream.url], faults) as proxy:
        conn = _Connection(proxy.url(upstream.url))
        scoped_connection(conn, "p1", purpose="create volumes", role="admin")
        assert proxy.unspent == [] and len(proxy.faulted("503")) == 2
    assert upstream.seen["POST"] == 1


def test_a_refused_project_scoped_token_names_the_grant(upstream: Upstream) -> None:
    from stackhop.clouds import scoped_connection
    from stackhop.errors import ConfigError

    class Refusing(Upstream):
        async def _answer(self, request: web.Request) -> web.Response:
            self.seen[request.method] += 1
            return web.json_response({"error": {"code": 403}}, status=403)

    with Refusing() as refusing:
        with pytest.raises(ConfigError, match=r"cannot act in project p1 .* role add .* admin"):
            scoped_connection(_Connection(refusing.url), "p1", purpose="x", role="admin")
        assert refusing.seen["POST"] == 1  # a refusal is not retried
