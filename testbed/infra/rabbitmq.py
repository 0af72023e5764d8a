"""RabbitMQ shared by both clouds: one broker, a vhost per cloud, nothing outside the state dir.

``rabbitmq-server`` runs in the foreground with its own HOME (so its Erlang
cookie lives in the state dir, not in ``/root``), its own config, mnesia and
log directories, and its own ``epmd`` on ``EPMD_PORT``: a second epmd that
we start and stop by PID, so ``down`` never leaves an Erlang daemon behind and
never touches an epmd that someone else runs on 4369. Users, vhosts and
permissions are declared in a definitions file the broker loads at boot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra.files import write_file
from testbed.infra.locked import LockedComponent
from testbed.process import Daemon, run, tcp_open

NAME = "rabbitmq"
NODE = "stackhop@localhost"
VHOSTS = tuple(c.rabbit_vhost for c in layout.CLOUDS)
ALL_VHOSTS = (*VHOSTS, layout.STACKHOP_RABBIT_VHOST)

BASE_DIR = layout.SHARED_DIR / "rabbitmq"
HOME = BASE_DIR / "home"
COOKIE = HOME / ".erlang.cookie"
MNESIA_DIR = BASE_DIR / "mnesia"
LOG_BASE = layout.LOG_DIR / "rabbitmq"
CONFIG = BASE_DIR / "rabbitmq.conf"
DEFINITIONS = BASE_DIR / "definitions.json"
PLUGINS = BASE_DIR / "enabled_plugins"
ENV_FILE = BASE_DIR / "rabbitmq-env.conf"

# Erlang's distribution (node <-> rabbitmqctl) on loopback only, and never an
# `epmd -daemon` of Erlang's own making: it would outlive `down`.
_LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"


def _password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password)).

    The salt is derived from the password so the definitions file is stable
    across runs (it is rewritten only when the password changes).
    """
    salt = hashlib.sha256(b"stackhop-testbed:" + password.encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _definitions() -> str:
    user = layout.RABBIT_USER
    # stackhop's executor has a vhost and a user of its own, with rights there only.
    ours = (layout.STACKHOP_RABBIT_USER, layout.STACKHOP_RABBIT_VHOST)
    return json.dumps({
        "users": [{
            "name": name,
            "password_hash": _password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        } for name, password, tags in (
            (user, layout.RABBIT_PASSWORD, ["administrator"]),
            (ours[0], layout.STACKHOP_RABBIT_PASSWORD, []),
        )],
        "vhosts": [{"name": v} for v in ALL_VHOSTS],
        "permissions": [
            {"user": user, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
            for v in ALL_VHOSTS
        ] + [
            {"user": ours[0], "vhost": ours[1], "configure": ".*", "write": ".*", "read": ".*"}
        ],
    }, indent=2) + "\n"


def _config() -> str:
    return "\n".join([
        f"listeners.tcp.1 = {layout.HOST}:{layout.RABBIT_PORT}",
        f"load_definitions = {DEFINITIONS}",
        # The services connect over 127.0.0.1 but not as guest; no exception needed.
        "loopback_users.guest = true",
        "log.console = false",
        "log.file.level = warning",
        # A volume copy may hold its (late-acknowledged) message for hours; RabbitMQ
        # 3.10 closes the channel after 30 min by default (node-wide: nothing finer there).
        "consumer_timeout = 86400000",
        "",
    ])


def environment() -> dict[str, str]:
    """Environment for rabbitmq-server and rabbitmqctl: everything points into the state dir."""
    return {
        "HOME": str(HOME),
        "RABBITMQ_NODENAME": NODE,
        "RABBITMQ_NODE_IP_ADDRESS": layout.HOST,
        "RABBITMQ_NODE_PORT": str(layout.RABBIT_PORT),
        "RABBITMQ_DIST_PORT": str(layout.RABBIT_DIST_PORT),
        "RABBITMQ_CONFIG_FILE": str(CONFIG),
        "RABBITMQ_CONF_ENV_FILE": str(ENV_FILE),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(BASE_DIR / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(PLUGINS),
        "RABBITMQ_MNESIA_BASE": str(MNESIA_DIR),
        "RABBITMQ_LOG_BASE": str(LOG_BASE),
        "RABBITMQ_PID_FILE": str(layout.RUN_DIR / "rabbitmq-beam.pid"),
        "ERL_EPMD_PORT": str(layout.EPMD_PORT),
        "ERL_EPMD_ADDRESS": layout.HOST,
        # Two schedulers that do not busy-wait: idle CPU stays near zero.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
            f"+S 2:2 +sbwt none +sbwtdcpu none +sbwtdio none {_LOOPBACK_DIST}",
        "RABBITMQ_CTL_ERL_ARGS": _LOOPBACK_DIST,
    }


_definitions_changed = False
_was_running = False


def _setup() -> None:
    global _definitions_changed, _was_running
    _was_running = server_daemon().running()
    for d in (HOME, MNESIA_DIR, LOG_BASE):
        d.mkdir(parents=True, exist_ok=True)
    if not COOKIE.exists():
        write_file(COOKIE, secrets.token_hex(20), mode=0o600)
    COOKIE.chmod(0o600)  # Erlang refuses a cookie readable by others
    write_file(CONFIG, _config())
    write_file(ENV_FILE, "# the testbed sets everything through the environment\n")
    write_file(BASE_DIR / "advanced.config", "[].\n")
    write_file(PLUGINS, "[].\n")
    _definitions_changed = write_file(DEFINITIONS, _definitions(), mode=0o600)


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl`` against the testbed's node; return its output."""
    return run(
        ["/usr/lib/rabbitmq/bin/rabbitmqctl", "--node", NODE, *args],
        env=environment(), log=layout.LOG_DIR / "rabbitmqctl.log", timeout=timeout,
    ).stdout


def _after_start() -> None:
    # Definitions are read at boot; a broker that was already running when
    # they changed imports them now.
    # A broker started just now loaded them at boot: importing again is
    # redundant and, on a loaded machine, can outlast rabbitmqctl's timeout.
    global _definitions_changed
    if _definitions_changed and _was_running:
        rabbitmqctl("import_definitions", str(DEFINITIONS), timeout=180)
    _definitions_changed = False


def amqp_answers(timeout: float = 2.0) -> bool:
    """True when the AMQP listener answers the protocol header with Connection.Start."""
    try:
        with socket.create_connection((layout.HOST, layout.RABBIT_PORT), timeout=timeout) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = s.recv(7)
    except OSError:
        return False
    # A method frame (type 1) on channel 0.
    return len(head) == 7 and head[0] == 1 and head[1:3] == b"\x00\x00"


def epmd_names(timeout: float = 2.0) -> str:
    """The node names our epmd has registered ('' when it does not answer).

    epmd's NAMES_REQ: a 2-byte length and ``n``; the answer is epmd's port
    (4 bytes) then lines like ``name stackhop at port 35673``.
    """
    try:
        with socket.create_connection((layout.HOST, layout.EPMD_PORT), timeout=timeout) as s:
            s.sendall(b"\x00\x01n")
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks)[4:].decode(errors="replace")


def _server_answers() -> bool:
    # Registered with our epmd too: after an epmd restart the node is not, and
    # rabbitmqctl could no longer find it, so the broker must be restarted.
    return amqp_answers() and f"name {NODE.split('@')[0]} " in epmd_names()


def _vhosts_exist() -> bool:
    # rabbitmqctl against a node that is down starts an `epmd -daemon` of its
    # own on EPMD_PORT (whatever -start_epmd says), which then keeps our epmd
    # from binding at the next `up`: ask only a broker that answers.
    if not _server_answers():
        return False
    listed = set(rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers").split())
    return set(ALL_VHOSTS) <= listed


def epmd_daemon() -> Daemon:
    return Daemon(
        name="rabbitmq-epmd",
        argv=["/usr/bin/epmd", "-port", str(layout.EPMD_PORT), "-address", layout.HOST],
        check=lambda: tcp_open(layout.EPMD_PORT),
        ready_timeout=15,
        stop_timeout=5,
    )


def server_daemon() -> Daemon:
    return Daemon(
        name=NAME,
        argv=["/usr/lib/rabbitmq/bin/rabbitmq-server"],
        env=environment(),
        check=_server_answers,
        ready_timeout=120,
        stop_timeout=30,
    )


def component() -> Component:
    """RabbitMQ with its own epmd; vhosts ``src`` and ``dst`` for ``RABBIT_USER``."""
    return LockedComponent(
        name=NAME,
        daemons=[epmd_daemon(), server_daemon()],
        setup=_setup,
        after_start=_after_start,
        checks={"rabbitmq vhosts": _vhosts_exist},
    )


def log_dir() -> Path:
    """Where the broker writes its own logs."""
    return LOG_BASE
