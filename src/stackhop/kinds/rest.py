"""Plain REST calls through an openstacksdk service proxy, with errors raised.

The kinds talk to the APIs with explicit URLs and microversions rather than
openstacksdk's resource classes: the wire format is then exactly the one the
services document (and the one the database export reproduces), and no
client-side attribute renaming sits between the archive and the cloud.
An error response raises openstacksdk's ``HttpException`` subclasses, which
the engine classifies for retries.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from openstack import exceptions as sdk_exceptions


def call(
    service: Any,
    method: str,
    url: str,
    *,
    json: Any = None,
    microversion: str | None = None,
    missing_ok: bool = False,
) -> Any:
    """``method url`` on ``service`` (e.g. ``conn.compute``); the decoded body, or None.

    ``missing_ok`` turns a 404 into ``None`` instead of NotFoundException.
    """
    kwargs: dict[str, Any] = {}
    if json is not None:
        kwargs["json"] = json
    if microversion is not None:
        kwargs["microversion"] = microversion
    response = service.request(url, method, **kwargs)
    if missing_ok and response.status_code == 404:
        return None
    sdk_exceptions.raise_from_response(response)
    if not response.content:
        return None
    return response.json()


def segment(value: str) -> str:
    """``value`` quoted as one URL path segment (keypair names may hold spaces)."""
    return quote(value, safe="")


def paged(service: Any, url: str, key: str, *, microversion: str | None = None) -> list[Any]:
    """Every item of a Neutron-style listing, following ``<key>_links`` next pages."""
    items: list[Any] = []
    next_url: str | None = url
    while next_url:
        body = call(service, "GET", next_url, microversion=microversion) or {}
        items.extend(body.get(key, []))
        next_url = None
        for link in body.get(f"{key}_links", []):
            if link.get("rel") == "next":
                next_url = link["href"]
    return items
