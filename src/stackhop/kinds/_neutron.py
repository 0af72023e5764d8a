"""Helpers the Neutron networking kinds share (not a kind module: no kind is registered here).

- :func:`listed`: the objects of a listing filtered by many values, in a few requests
  (the destination reads of a plan);
- :func:`project_facts`: the project name and domain a record carries for its identity;
- :func:`owned`: whether a destination object carries stackhop's marker for a source ID;
- :func:`neutron_error`: Neutron's error type and message in an error response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from openstack import exceptions as sdk_exceptions

from stackhop.kinds.base import Connection, Kind
from stackhop.kinds.rest import paged

#: Values per filter in one listing request (keeps the URL well under 8 KiB).
FILTER_CHUNK = 40

NETWORK = "neutron.network"
SUBNET = "neutron.subnet"
SUBNET_POOL = "neutron.subnet_pool"
ROUTER = "neutron.router"
ROUTER_INTERFACES = "neutron.router_interfaces"
PHYSNET = "neutron.physnet"
"""Not a kind: the referenced "kind" of a provider physical network name, so the
operator's ``--network-map`` (``physnets: {src: dst}``) maps it through the resolver."""


def project_facts(project: Mapping[str, Any] | None, project_id: str | None) -> dict[str, Any]:
    """The project fields every networking record carries (its identity names the project).

    ``project_id`` None is an external network of the provider's, outside the export.
    """
    if project_id is None:
        return {"project_id": None, "project_name": "(provider)", "project_domain": "(provider)"}
    return {
        "project_id": project_id,
        "project_name": project["name"] if project else project_id,
        "project_domain": project["domain_name"] if project else "?",
    }


def listed(
    conn: Connection,
    url: str,
    key: str,
    filter_name: str,
    values: Iterable[str],
) -> list[Any]:
    """Every object of a Neutron listing whose ``filter_name`` is one of ``values``."""
    wanted = sorted({str(v) for v in values})
    found: list[Any] = []
    for start in range(0, len(wanted), FILTER_CHUNK):
        chunk = wanted[start : start + FILTER_CHUNK]
        query = "&".join(f"{filter_name}={quote(v, safe='')}" for v in chunk)
        found.extend(paged(conn.network, f"{url}?{query}", key))
    return found


def owned(obj: Mapping[str, Any], source_id: str) -> bool:
    """Whether ``obj`` (a destination object) is stackhop's copy of source object ``source_id``."""
    return Kind.marked_source_id(obj.get("description")) == source_id


def find_marked(
    conn: Connection,
    url: str,
    key: str,
    filter_name: str,
    records: Sequence[Mapping[str, Any]],
    view: Callable[[Mapping[str, Any]], Any],
    accept: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None,
) -> list[Any]:
    """Each record's destination copy (``view`` of it), or None: found by marker among the
    objects listed with ``filter_name`` set to the records' own values of that field."""
    marked = by_marker(listed(conn, url, key, filter_name, (r[filter_name] for r in records)))
    found: list[Any] = []
    for record in records:
        obj = marked.get(str(record["id"]))
        wanted = obj is not None and (accept is None or accept(record, obj))
        found.append(view(obj) if wanted and obj is not None else None)
    return found


def by_marker(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Destination objects by the source ID in their marker (unmarked ones are left out)."""
    found: dict[str, Mapping[str, Any]] = {}
    for obj in objects:
        source = Kind.marked_source_id(obj.get("description"))
        if source is not None:
            found.setdefault(source, obj)
    return found


def neutron_error(exc: sdk_exceptions.HttpException) -> tuple[str, str]:
    """Neutron's error type (``IpAddressAlreadyAllocated``) and message in an error response:
    openstacksdk keeps only the status code of Neutron's ``NeutronError`` body."""
    try:
        body = exc.response.json() if exc.response is not None else {}
    except ValueError:
        body = {}
    error = body.get("NeutronError") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error.get("type") or ""), str(error["message"])
    return "", str(exc.details or exc.message or exc.status_code)


#: Neutron's refusals of an address asked for: taken, or outside the network's subnets.
ADDRESS_REFUSED = frozenset(
    {"IpAddressAlreadyAllocated", "IpAddressInUse", "InvalidIpForNetwork", "InvalidIpForSubnet"}
)


def address_refused(exc: sdk_exceptions.HttpException) -> bool:
    """Whether Neutron refused an address asked for (taken, or outside the subnets)."""
    return exc.status_code in (400, 409) and neutron_error(exc)[0] in ADDRESS_REFUSED
