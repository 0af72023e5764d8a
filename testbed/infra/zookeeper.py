"""ZooKeeper 3.8 (Debian's) standalone on loopback, started directly with java.

Debian's init scripts want /etc/zookeeper and a zookeeper user; the server
main class needs neither. The admin HTTP server is off (it would take port
8080) and only the four-letter words the health check uses are allowed.
"""

from __future__ import annotations

import socket

from testbed import layout
from testbed.component import Component
from testbed.infra.files import write_file
from testbed.infra.locked import LockedComponent
from testbed.process import Daemon

NAME = "zookeeper"
BASE_DIR = layout.SHARED_DIR / "zookeeper"
DATA_DIR = BASE_DIR / "data"
CONFIG = BASE_DIR / "zoo.cfg"
CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def address() -> str:
    """``host:port`` for ZooKeeper clients (kazoo's ``hosts``)."""
    return f"{layout.HOST}:{layout.ZOOKEEPER_PORT}"


def _config() -> str:
    return "\n".join([
        "tickTime=2000",
        f"dataDir={DATA_DIR}",
        f"clientPort={layout.ZOOKEEPER_PORT}",
        f"clientPortAddress={layout.HOST}",
        "admin.enableServer=false",
        "4lw.commands.whitelist=ruok,srvr,mntr",
        "maxClientCnxns=200",
        # Old snapshots and logs are of no use to a testbed: keep the disk small.
        "autopurge.snapRetainCount=3",
        "autopurge.purgeInterval=1",
        "",
    ])


def _setup() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    write_file(CONFIG, _config())


def four_letter_word(word: str, timeout: float = 2.0) -> str:
    """Send one of ZooKeeper's four-letter commands; return the answer ('' when down)."""
    try:
        with socket.create_connection((layout.HOST, layout.ZOOKEEPER_PORT), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


def daemon() -> Daemon:
    return Daemon(
        name=NAME,
        argv=[
            "java", "-Xms16m", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", CLASSPATH,
            "org.apache.zookeeper.server.ZooKeeperServerMain", str(CONFIG),
        ],
        check=lambda: four_letter_word("ruok") == "imok",
        cwd=BASE_DIR,
        ready_timeout=60,
        stop_timeout=10,
    )


def component() -> Component:
    """ZooKeeper on ``127.0.0.1:ZOOKEEPER_PORT``, healthy when ``ruok`` answers ``imok``."""
    return LockedComponent(name=NAME, daemons=[daemon()], setup=_setup)
