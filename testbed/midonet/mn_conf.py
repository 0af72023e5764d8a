"""A stand-in for MidoNet's ``mn-conf`` (no mn-conf binary exists here), for the tests.

It is not MidoNet's tool: it keeps one template's settings as JSON in a
ZooKeeper node, and understands only what stackhop calls:

    python -m testbed.midonet.mn_conf --zk HOST:PORT --node PATH set -t default [-c] < FILE
    python -m testbed.midonet.mn_conf --zk HOST:PORT --node PATH dump -t default

``set`` reads ``key : value`` lines (``#`` comments and blank lines skipped,
the value kept as written) and merges them into the node, or replaces the
node's content with them with ``-c`` (mn-conf(1) lists ``set [-c]``);
``dump`` prints ``key : value`` lines sorted by key. The tests use it as
``--set-command`` / ``--dump-command`` / ``--restore-command`` so that the
settings really travel through ZooKeeper.
"""

from __future__ import annotations

import argparse
import json
import sys

from kazoo.client import KazooClient


def parse(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            raise SystemExit(f"mn-conf: cannot parse {line!r}")
        settings[key.strip()] = value.strip()
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mn_conf")
    parser.add_argument("--zk", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("command", choices=["set", "dump"])
    parser.add_argument("-t", dest="template", default="default")
    parser.add_argument("-c", dest="clear", action="store_true")
    args = parser.parse_args(argv)
    client = KazooClient(hosts=args.zk, timeout=10)
    client.start(timeout=10)
    try:
        node = f"{args.node}/{args.template}"
        current: dict[str, str] = {}
        if client.exists(node):
            current = json.loads(client.get(node)[0] or b"{}")
        if args.command == "dump":
            sys.stdout.write("".join(f"{k} : {v}\n" for k, v in sorted(current.items())))
            return 0
        incoming = parse(sys.stdin.read())
        merged = incoming if args.clear else {**current, **incoming}
        data = json.dumps(merged, sort_keys=True).encode()
        if client.exists(node):
            client.set(node, data)
        else:
            client.create(node, data, makepath=True)
        return 0
    finally:
        client.stop()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
