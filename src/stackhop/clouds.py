"""Connections to OpenStack clouds, configured exactly as the ``openstack`` client reads them.

Clouds come from ``clouds.yaml`` (``OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml``), from
``OS_*`` variables (a sourced openrc, which openstacksdk names the
``envvars`` cloud) and ``OS_CLOUD`` selects the default. All of that is
openstacksdk's own loader: stackhop adds no configuration rules of its own.

Every failure of the configuration or of the first contact with a cloud
becomes one :mod:`stackhop.errors` exception with a one-line message:
:class:`~stackhop.errors.CloudUnknownError`, :class:`~stackhop.errors.AuthError`,
:class:`~stackhop.errors.CloudUnreachableError` or
:class:`~stackhop.errors.ConfigError`.

:func:`check` answers "can stackhop work with this cloud?": it authenticates,
reads the catalog, discovers every service's API versions and microversions
and probes the features stackhop relies on.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from stackhop import __version__
from stackhop.errors import (
    AuthError,
    CloudUnknownError,
    CloudUnreachableError,
    ConfigError,
    StackhopError,
)
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.retry import classify, retry_reads

if TYPE_CHECKING:
    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection
    from openstack.image.v2._proxy import Proxy as ImageV2

log = logging.getLogger(__name__)

#: Service types whose API versions ``check`` reports first, in this order.
CORE_SERVICES = ("compute", "block-storage", "image", "network", "identity")

#: Messages of keystoneauth and openstacksdk can be paragraphs; an error line is capped.
_MAX_DETAIL = 300


@dataclass(frozen=True)
class CloudConfig:
    """A configured cloud as the loader resolves it. Never holds a secret."""

    name: str
    auth_url: str | None
    region: str | None
    user: str | None
    project: str | None
    #: The clouds.yaml file that defines it, or ``environment`` for OS_* variables.
    source: str


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the service catalog."""

    service_type: str
    service_name: str
    interface: str
    region: str | None
    url: str


@dataclass(frozen=True)
class ApiVersion:
    """What version discovery found for one service."""

    service_type: str
    #: The version in use: the CURRENT one, else the highest listed.
    version: str | None
    status: str | None
    min_microversion: str | None
    max_microversion: str | None
    #: Every version the service lists, lowest first.
    versions: list[str] = field(default_factory=list)
    url: str | None = None
    #: False when the service did not answer and the version is guessed from its URL.
    discovered: bool = True


@dataclass(frozen=True)
class Capability:
    """One feature stackhop relies on, and whether this cloud offers it."""

    name: str
    present: bool
    detail: str
    needed_for: str


@dataclass
class CloudReport:
    """The result of :func:`check` for one cloud."""

    cloud: str
    auth_url: str | None
    region: str | None
    user: str | None
    project: str | None
    roles: list[str] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    apis: list[ApiVersion] = field(default_factory=list)
    capabilities: list[Capability] = field(default_factory=list)
    image_stores: list[str] = field(default_factory=list)
    image_import_methods: list[str] = field(default_factory=list)

    @property
    def services(self) -> list[str]:
        """Service types of the catalog, sorted."""
        return sorted({e.service_type for e in self.endpoints})

    @property
    def missing(self) -> list[Capability]:
        return [c for c in self.capabilities if not c.present]

    def api(self, service_type: str) -> ApiVersion | None:
        for a in self.apis:
            if a.service_type == service_type:
                return a
        return None

    def capability(self, name: str) -> Capability:
        for c in self.capabilities:
            if c.name == name:
                return c
        raise KeyError(name)


# -- configuration -----------------------------------------------------------


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


def _connection_detail(exc: Exception) -> str:
    """The operating system's reason (``Connection refused``) out of urllib3's long message."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if m:
        return m.group(1).strip()
    for reason in ("timed out", "Name or service not known", "certificate verify failed"):
        if reason in text:
            return reason
    return _one_line(text)


def _loader() -> OpenStackConfig:
    """A fresh openstacksdk loader: it reads the environment at construction.

    openstacksdk is imported inside the functions of this module, here and
    below, so that commands that never talk to a cloud start without it.
    """
    import openstack.exceptions
    import yaml
    from openstack.config.loader import OpenStackConfig

    try:
        loader = OpenStackConfig(app_name="stackhop", app_version=__version__)
    except (openstack.exceptions.ConfigException, yaml.YAMLError, OSError) as exc:
        raise ConfigError(f"cannot read the cloud configuration: {_one_line(exc)}") from exc
    _refuse_skipped_file(loader)
    return loader


def _refuse_skipped_file(loader: OpenStackConfig) -> None:
    """Fail on a clouds.yaml that openstacksdk skipped because it cannot parse it.

    The loader only logs a warning and reads the next file, or none: the
    operator would then see "cloud not configured" for a typo in the file.
    """
    import json

    import yaml
    from openstack.config import loader as sdk_loader

    candidates = [os.environ.get("OS_CLIENT_CONFIG_FILE"), *sdk_loader.CONFIG_FILES]
    for path in candidates:
        if not path or not os.path.exists(path):
            continue
        if path == loader.config_filename:
            return
        try:
            with open(path) as fh:
                if path.endswith("json"):
                    json.load(fh)
                else:
                    yaml.safe_load(fh)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read the cloud configuration {path}: {_one_line(exc)}"
            ) from exc
        return


def _configured_names(loader: OpenStackConfig) -> list[str]:
    names = loader.get_cloud_names()
    # With neither a clouds.yaml nor OS_* variables the loader invents a cloud
    # named "defaults" holding only default settings; that is not a configured cloud.
    if names == ["defaults"] and loader.config_filename is None:
        return []
    return names


def _known(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _resolve_name(loader: OpenStackConfig, name: str | None) -> str:
    names = _configured_names(loader)
    if name is None:
        name = loader.default_cloud if names else None
        if name is None:
            raise ConfigError(
                f"no cloud selected: name one of: {_known(names)} "
                "(or set OS_CLOUD, or source an openrc)"
            )
    if name not in names:
        raise CloudUnknownError(cloud=name, known=_known(names))
    return name


def _cloud_config(loader: OpenStackConfig, name: str) -> CloudConfig:
    import openstack.exceptions

    try:
        region = loader.get_one(name, validate=False)
    except openstack.exceptions.ConfigException as exc:
        raise ConfigError(f"cloud {name!r}: {_one_line(exc)}") from exc
    auth: dict[str, Any] = region.config.get("auth") or {}

    def setting(*keys: str) -> str | None:
        # OS_* variables arrive flat (auth_url next to region_name); only the
        # auth plugin, which validate=False skips, moves them under "auth".
        for key in keys:
            value = auth.get(key) or region.config.get(key)
            if value:
                return str(value)
        return None

    source = "environment" if name == loader.envvar_key else str(loader.config_filename)
    return CloudConfig(
        name=name,
        auth_url=setting("auth_url"),
        region=region.region_name or None,
        user=setting("username", "user_id"),
        project=setting("project_name", "project_id"),
        source=source,
    )


def list_clouds() -> list[CloudConfig]:
    """Every configured cloud, in the order the configuration lists them."""
    loader = _loader()
    return [_cloud_config(loader, name) for name in _configured_names(loader)]


def cloud_config(name: str | None) -> CloudConfig:
    """One configured cloud; ``None`` selects the default (OS_CLOUD or the OS_* variables)."""
    loader = _loader()
    return _cloud_config(loader, _resolve_name(loader, name))


# -- connecting --------------------------------------------------------------


@contextmanager
def api_errors(cloud: str, url: str | None = None) -> Iterator[None]:
    """Turn keystoneauth / openstacksdk failures of contact into stackhop errors.

    Covers what can go wrong reaching and authenticating to a cloud: refused
    credentials, an endpoint that does not answer, an incomplete configuration.
    Other API errors pass through unchanged for the caller to judge.
    """
    import openstack.exceptions
    from keystoneauth1 import exceptions as ksa

    try:
        yield
    except StackhopError:
        raise
    except ksa.Unauthorized as exc:
        raise AuthError(cloud=cloud, detail=_one_line(exc)) from exc
    except openstack.exceptions.HttpException as exc:
        if exc.status_code == 401:
            raise AuthError(cloud=cloud, detail=_one_line(exc)) from exc
        raise
    except (ksa.DiscoveryFailure, ksa.ConnectionError) as exc:
        raise CloudUnreachableError(
            cloud=cloud, url=url or "?", detail=_connection_detail(exc)
        ) from exc
    except (ksa.AuthPluginException, ksa.MissingAuthMethods) as exc:
        raise ConfigError(
            f"cloud {cloud!r} is not configured completely: {_one_line(exc)}"
        ) from exc
    except openstack.exceptions.ConfigException as exc:
        raise ConfigError(f"cloud {cloud!r}: {_one_line(exc)}") from exc


def connect(name: str | None = None) -> Connection:
    """An authenticated openstacksdk connection to the cloud ``name``.

    ``None`` selects the default cloud as the ``openstack`` client does:
    ``OS_CLOUD``, else the ``OS_*`` variables of a sourced openrc, else the only
    cloud configured. A token is fetched here, so a bad password or an
    unreachable cloud fails now, with a one-line error, not at the first call.
    """
    from openstack.connection import Connection

    loader = _loader()
    name = _resolve_name(loader, name)
    url = _cloud_config(loader, name).auth_url
    with api_errors(name, url):
        conn = Connection(config=loader.get_one(name))
        retry_reads(conn.session)
        conn.session.get_token()
    log.debug("authenticated to cloud %s at %s", name, url)
    return conn


def scoped_connection(conn: Connection, project_id: str, *, purpose: str, role: str) -> Connection:
    """``conn``'s user scoped to ``project_id`` (Cinder and Nova create in the token's project).

    The new connection's session retries its reads and token requests as
    :func:`connect`'s does, so a busy Keystone (a 503 on the scoped token) is
    waited out; only a refusal (401/403/404: no role there, no such project)
    becomes a one-line ConfigError naming the grant that fixes it. A failure
    still transient after the retries is re-raised as it is, for the engine to
    retry the step.
    """
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk_exceptions

    if getattr(conn, "current_project_id", None) == project_id:
        return conn
    try:
        scoped = conn.connect_as(project_id=project_id, project_name=None)
        retry_reads(scoped.session)
        scoped.session.get_token()
    except StackhopError:
        raise
    except (ksa.ClientException, sdk_exceptions.SDKException) as exc:
        if classify(exc).transient:
            raise
        raise ConfigError(
            f"the credentials cannot act in project {project_id} to {purpose} "
            f"({type(exc).__name__}); grant your user a role there, e.g. `openstack role add "
            f"--user <you> --project {project_id} {role}`"
        ) from exc
    return cast("Connection", scoped)


# -- checking ----------------------------------------------------------------


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"2.96"`` / ``"v3.14"`` -> ``(2, 96)`` / ``(3, 14)``; None when absent or unparsable."""
    if not text:
        return None
    m = re.fullmatch(r"v?(\d+(?:\.\d+)*)", str(text).strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def version_at_least(have: str | None, need: str) -> bool:
    """Whether microversion ``have`` is ``need`` or later (``"2.10" > "2.9"``)."""
    parsed, wanted = parse_version(have), parse_version(need)
    return parsed is not None and wanted is not None and parsed >= wanted


def _version_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ".".join(str(p) for p in value)
    return str(value)


def summarize_versions(service_type: str, data: list[Any]) -> ApiVersion:
    """Reduce the version list that discovery returns to the version in use.

    ``data`` holds keystoneauth ``VersionData`` mappings (``version``,
    ``status``, ``min_microversion``, ``max_microversion``, ``url``).
    """
    entries = sorted(
        (d for d in data if parse_version(_version_string(d.get("version")))),
        key=lambda d: parse_version(_version_string(d.get("version"))) or (),
    )
    if not entries:
        return ApiVersion(service_type, None, None, None, None, discovered=False)
    # keystoneauth swallows a failed discovery and guesses the version from the
    # catalog URL; only a real version document carries a raw status.
    if not any(d.get("raw_status") for d in entries):
        return ApiVersion(
            service_type=service_type,
            version=_version_string(entries[-1].get("version")),
            status="NO ANSWER",
            min_microversion=None,
            max_microversion=None,
            versions=[],
            url=entries[-1].get("url"),
            discovered=False,
        )
    current = [d for d in entries if str(d.get("status") or "").upper() == "CURRENT"]
    chosen = current[-1] if current else entries[-1]
    return ApiVersion(
        service_type=service_type,
        version=_version_string(chosen.get("version")),
        status=chosen.get("status"),
        min_microversion=_version_string(chosen.get("min_microversion")),
        max_microversion=_version_string(chosen.get("max_microversion")),
        versions=[v for v in (_version_string(d.get("version")) for d in entries) if v],
        url=chosen.get("url"),
    )


def official_service_type(catalog_type: str) -> str:
    """The official name of a catalog service type (``volumev3`` -> ``block-storage``)."""
    return _service_types().get_service_type(catalog_type) or catalog_type


@functools.cache
def _service_types() -> Any:
    import os_service_types

    # The bundled data only: no network fetch of the registry.
    return os_service_types.ServiceTypes()


def _catalog(conn: Connection, cloud: str) -> tuple[Any, list[Endpoint]]:
    from keystoneauth1.identity.base import BaseIdentityPlugin

    auth = conn.session.auth
    if not isinstance(auth, BaseIdentityPlugin):
        raise ConfigError(f"cloud {cloud!r} uses an auth plugin that gives no service catalog")
    access = auth.get_access(conn.session)
    endpoints = []
    for service in access.service_catalog.catalog or []:
        for ep in service.get("endpoints", []):
            endpoints.append(
                Endpoint(
                    service_type=service.get("type", ""),
                    service_name=service.get("name", ""),
                    interface=ep.get("interface", ""),
                    region=ep.get("region_id") or ep.get("region"),
                    url=ep.get("url", ""),
                )
            )
    endpoints.sort(key=lambda e: (e.service_type, e.interface, e.region or ""))
    return access, endpoints


def _discover(conn: Connection, service_types: list[str]) -> list[ApiVersion]:
    """Version discovery (GET of each endpoint's version document) per service."""
    from keystoneauth1 import exceptions as ksa
    from openstack.config.cloud_region import CloudRegion

    region: CloudRegion = conn.config
    apis = []
    for st in service_types:
        interface = region.get_interface(st) or "public"
        try:
            data = conn.session.get_all_version_data(
                interface=interface, region_name=region.get_region_name(st), service_type=st
            )
        except ksa.ClientException as exc:
            log.debug("version discovery of %s failed: %s", st, exc)
            apis.append(ApiVersion(st, None, f"discovery failed: {_one_line(exc)}", None, None))
            continue
        found: list[Any] = []
        for by_interface in data.values():
            for by_type in by_interface.values():
                for versions in by_type.values():
                    found.extend(versions)
        apis.append(summarize_versions(st, found))
    return apis


def _probe_failure(exc: Exception) -> str:
    status = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    return f"HTTP {status}" if status else _connection_detail(exc)


def _image_capabilities(conn: Connection, report: CloudReport) -> list[Capability]:
    """Glance multi-store (``/v2/info/stores``) and import methods (``/v2/info/import``)."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    # Only the v2 API has stores and import methods; the v1 proxy type is never used here.
    image = cast("ImageV2", conn.image)
    caps = []
    try:
        stores = list(image.stores())
        report.image_stores = [str(s.id) for s in stores]
        default = [str(s.id) for s in stores if s.is_default]
        detail = "stores: " + ", ".join(report.image_stores)
        if default:
            detail += f" (default {default[0]})"
        caps.append(Capability("image multi-store", bool(stores), detail, _NEEDS["multistore"]))
    except (sdk.SDKException, ksa.ClientException) as exc:
        caps.append(
            Capability(
                "image multi-store",
                False,
                f"GET /v2/info/stores: {_probe_failure(exc)}",
                _NEEDS["multistore"],
            )
        )
    try:
        info = image.get_import_info()
        methods = (info.import_methods or {}).get("value") or []
        report.image_import_methods = [str(m) for m in methods]
        caps.append(
            Capability(
                "image import copy-image",
                "copy-image" in methods,
                "import methods: " + (", ".join(report.image_import_methods) or "none"),
                _NEEDS["copy-image"],
            )
        )
    except (sdk.SDKException, ksa.ClientException) as exc:
        caps.append(
            Capability(
                "image import copy-image",
                False,
                f"GET /v2/info/import: {_probe_failure(exc)}",
                _NEEDS["copy-image"],
            )
        )
    return caps


def _usage_capability(conn: Connection) -> Capability:
    """os-simple-tenant-usage answers (an hour's window keeps the query cheap)."""
    from keystoneauth1 import exceptions as ksa

    end = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    params = {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat()}
    name = "compute os-simple-tenant-usage"
    try:
        resp = conn.compute.get("/os-simple-tenant-usage", params=params, raise_exc=False)
    except ksa.ClientException as exc:
        return Capability(
            name, False, f"GET /os-simple-tenant-usage: {_probe_failure(exc)}", _NEEDS["usage"]
        )
    if resp.status_code == 200:
        n = len(resp.json().get("tenant_usages", []))
        return Capability(name, True, f"answers ({n} project(s) in the last hour)", _NEEDS["usage"])
    return Capability(
        name, False, f"GET /os-simple-tenant-usage: HTTP {resp.status_code}", _NEEDS["usage"]
    )


_NEEDS = {
    "keypairs": "exporting and importing every user's keypairs",
    "multistore": "moving images between Glance backends",
    "copy-image": "copying image data between stores without a download",
    "usage": "archiving the usage history",
    "admin": "reading and writing every project's resources",
    "users": "mapping users by name (--domain-map)",
}


def identity_capabilities(conn: Connection) -> list[Capability]:
    """One capability per domain: can its users be listed (an LDAP domain's bind works)?

    stackhop maps users per domain (:func:`stackhop.kinds.identity.list_users`);
    a domain whose backend refuses (wrong bind password, directory down) is
    named here rather than failing an export later.
    """
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    from stackhop.kinds import identity

    try:
        domains = identity.domain_names(conn)
    except (sdk.SDKException, ksa.ClientException) as exc:
        return [Capability("identity domains", False, _probe_failure(exc), _NEEDS["users"])]
    caps = []
    for domain_id, domain_name in domains.items():
        name = f"identity users of domain {domain_name}"
        try:
            n = sum(1 for _ in identity.users_of_domain(conn, domain_id, domain_name))
        except identity.DomainListingError as exc:
            caps.append(Capability(name, False, exc.message, _NEEDS["users"]))
            continue
        caps.append(Capability(name, True, f"{n} user(s) listed", _NEEDS["users"]))
    return caps


#: The microversion stackhop needs: compute 2.10 lists other users' keypairs.
COMPUTE_KEYPAIRS_MICROVERSION = "2.10"


def _microversion_capability(
    report: CloudReport, service_type: str, need: str, name: str, needed_for: str
) -> Capability:
    api = report.api(service_type)
    if api is None:
        return Capability(name, False, f"no {service_type} service in the catalog", needed_for)
    have = api.max_microversion
    if not api.discovered:
        detail = f"{service_type} did not answer version discovery at {api.url}"
    elif have:
        detail = f"max microversion {have}"
    else:
        detail = f"{service_type} reports no microversions"
    return Capability(name, version_at_least(have, need), detail, needed_for)


def check(name: str | None = None, events: EventSink | None = None) -> CloudReport:
    """Authenticate to a cloud and report its catalog, API versions and what stackhop needs.

    Raises the errors of :func:`connect` when the cloud cannot be reached or
    refuses the credentials; a missing feature is not an error but a
    :class:`Capability` marked absent, and a warning event on ``events``.
    """
    cfg = cloud_config(name)
    conn = connect(cfg.name)
    with api_errors(cfg.name, cfg.auth_url):
        access, endpoints = _catalog(conn, cfg.name)
    report = CloudReport(
        cloud=cfg.name,
        auth_url=cfg.auth_url,
        region=cfg.region,
        user=access.username or cfg.user,
        project=access.project_name or cfg.project,
        roles=sorted(access.role_names or []),
        endpoints=endpoints,
    )
    in_catalog = sorted({official_service_type(e.service_type) for e in endpoints})
    ordered = [s for s in CORE_SERVICES if s in in_catalog]
    ordered += [s for s in in_catalog if s not in ordered]
    report.apis = _discover(conn, ordered)

    report.capabilities.append(
        _microversion_capability(
            report,
            "compute",
            COMPUTE_KEYPAIRS_MICROVERSION,
            f"compute microversion >= {COMPUTE_KEYPAIRS_MICROVERSION}",
            _NEEDS["keypairs"],
        )
    )
    if "image" in in_catalog:
        report.capabilities += _image_capabilities(conn, report)
    else:
        for cap_name, need in (
            ("image multi-store", "multistore"),
            ("image import copy-image", "copy-image"),
        ):
            report.capabilities.append(
                Capability(cap_name, False, "no image service", _NEEDS[need])
            )
    if "compute" in in_catalog:
        report.capabilities.append(_usage_capability(conn))
    else:
        report.capabilities.append(
            Capability(
                "compute os-simple-tenant-usage", False, "no compute service", _NEEDS["usage"]
            )
        )
    report.capabilities += identity_capabilities(conn)
    report.capabilities.append(
        Capability(
            "admin role",
            "admin" in report.roles,
            "roles: " + (", ".join(report.roles) or "none"),
            _NEEDS["admin"],
        )
    )
    conn.close()
    sink = events or NullSink()
    for cap in report.missing:
        sink.emit(
            Event(
                EventType.WARNING,
                kind="cloud",
                identity=report.cloud,
                message=f"lacks {cap.name} ({cap.detail}), needed for {cap.needed_for}",
            )
        )
    return report
