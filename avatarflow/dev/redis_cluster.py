"""A private Redis Cluster on loopback: ``masters`` redis-server processes in cluster mode
(the same binary as RedisServer), the 16384 slots split evenly between them, no replicas.
For the tests and benchmarks of the bus on a cluster; its URL is ``redis+cluster://...``.

Redis 6 puts a node's cluster bus on its port + 10000 (a separate port only from Redis 7), so
each node gets a port whose +10000 partner is free too.
"""

from __future__ import annotations

import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from avatarflow.contracts.errors import Unavailable
from avatarflow.dev.net import port_is_free
from avatarflow.dev.redis_server import HOST, RedisServer, tail

SLOTS = 16384
BUS_OFFSET = 10000
CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000", "--cluster-require-full-coverage", "yes")


def _port_pair() -> int:
    """A port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if port_is_free(port, HOST) and port_is_free(port + BUS_OFFSET, HOST):
            return port
    raise Unavailable("no free port pair (port and port + 10000) for a cluster node")


def command(port: int, *args: object) -> Any:
    """One command to the node on ``port``, over a fresh connection, in RESP (only the bus
    may use the Redis client library): a simple reply as text, an integer, a bulk string as
    bytes, an array as a list; an error reply raises Unavailable."""
    parts = [str(a).encode() for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p)
                                                  for p in parts)
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(request)
        return _reply(s.makefile("rb"))


def _reply(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise Unavailable(f"redis replied: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [_reply(f) for _ in range(int(rest))]
    raise Unavailable(f"unexpected reply from redis: {line[:40]!r}")


def slot_ranges(masters: int) -> list[range]:
    """The slots of each master: contiguous, as even as possible."""
    bounds = [SLOTS * i // masters for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


class RedisClusterServer:
    """``with RedisClusterServer(masters=3) as c: use(c.url)``; ``kill(i)`` stops one node."""

    def __init__(self, *, masters: int = 3, log_dir: str | Path | None = None) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.masters = masters
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="avf-redis-cluster-"))
        self.nodes: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports)

    def start(self, timeout: float = 30.0) -> RedisClusterServer:
        """Starts every node, assigns the slots, joins the nodes; returns once every node
        reports the cluster ok."""
        try:
            for i in range(self.masters):
                node = RedisServer(port=_port_pair(), log_dir=self.log_dir / f"node{i}",
                                   extra_args=CLUSTER_ARGS)
                self.nodes.append(node.start())
            for port, slots in zip(self.ports, slot_ranges(self.masters), strict=True):
                command(port, "CLUSTER", "ADDSLOTS", *slots)
            for port in self.ports[1:]:
                command(self.ports[0], "CLUSTER", "MEET", HOST, port)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            infos = [command(p, "CLUSTER", "INFO").decode() for p in self.ports]
            if all("cluster_state:ok" in i and f"cluster_known_nodes:{self.masters}\r" in i
                   for i in infos):
                return
            time.sleep(0.05)
        logs = "\n".join(tail(n.log_path, 10) for n in self.nodes)
        raise Unavailable(f"the redis cluster did not form within {timeout:g} s; logs:\n{logs}")

    def node_of(self, key: str) -> int:
        """The index of the master that holds ``key``'s slot."""
        slot = command(self.ports[0], "CLUSTER", "KEYSLOT", key)
        return next(i for i, r in enumerate(slot_ranges(self.masters)) if slot in r)

    def keys(self, index: int, pattern: str = "*") -> set[str]:
        """The keys master ``index`` holds that match ``pattern``."""
        return {k.decode() for k in command(self.ports[index], "KEYS", pattern)}

    def kill(self, index: int) -> None:
        self.nodes[index].stop(grace=0)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
