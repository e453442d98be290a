"""A real Redis Cluster on free local ports: three masters, one replica each.

    cluster = LocalCluster(tmp_path)      # six `redis-server --cluster-enabled yes`, nothing on disk
    cluster.start()                       # … joined by `redis-cli --cluster create`, state ok
    cluster.url                           # redis://127.0.0.1:P/0, any node will do
    await cluster.fail_master_of(key)     # SIGKILL the master of key's slot; its replica takes over
    cluster.stop()

`shared_cluster` gives every pytest-xdist worker of one run the same cluster: the first
to arrive starts it, the last to leave stops it (a count in a file, under a file lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import key_slot

NODES, REPLICAS = 6, 1
NODE_TIMEOUT_MS = 1000  # how soon a dead master is noticed and its replica promoted
START_TIMEOUT = 30.0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """`count` ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 45000)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class LocalCluster:
    directory: Path
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            pytest.skip("redis-server and redis-cli are not installed")
        self.ports = cluster_ports(NODES)
        try:
            self._start(server, cli)
        except BaseException:
            self.stop()  # no node left running behind a start that failed
            raise

    def _start(self, server: str, cli: str) -> None:
        for port in self.ports:
            subprocess.run(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 # A replica may always take over: a test kills masters right after a write.
                 "--cluster-replica-validity-factor", "0",
                 "--dir", str(self.directory), "--pidfile", str(self._pidfile(port)),
                 "--logfile", str(self.directory / f"redis-{port}.log"),
                 "--save", "", "--appendonly", "no", "--daemonize", "yes"],
                check=True, stdout=subprocess.DEVNULL,
            )
        for port in self.ports:
            self._wait(lambda p=port: _ask(p, "PING"), f"node {port} to answer")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(REPLICAS), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=START_TIMEOUT,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every live node says cluster_state:ok and knows three masters."""

        def ok() -> bool:
            for port in self.live_ports():
                info = _info(port)
                if info["cluster_state"] != "ok" or int(info["cluster_size"]) != NODES // (REPLICAS + 1):
                    return False
            return True

        self._wait(ok, "cluster_state:ok", timeout)

        def replicas_synced() -> bool:
            roles = [_role(port) for port in self.live_ports()]
            replicas = [info for info in roles if info.get("role") == "slave"]
            return len(replicas) == NODES - NODES // (REPLICAS + 1) and all(
                info.get("master_link_status") == "up" for info in replicas)

        self._wait(replicas_synced, "every replica to follow its master", timeout)

    def stop(self) -> None:
        for port in self.ports:
            pid = self._pid(port)
            if pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- failover ------------------------------------------------------------------

    def master_of(self, key: str) -> int:
        """The port of the master that holds `key`'s slot now."""
        slot = key_slot(key.encode())
        for port in self.live_ports():
            for start, end, master in _slots(port):
                if start <= slot <= end:
                    return master
        raise LookupError(f"no live node serves slot {slot}")

    def kill(self, port: int) -> None:
        pid = self._pid(port)
        assert pid is not None, f"node {port} has no pid file"
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda: not _alive(pid), f"node {port} to die")

    def wait_promoted(self, key: str, dead: int, timeout: float = START_TIMEOUT) -> int:
        """Until a live master other than `dead` serves `key`'s slot; its port."""

        def promoted() -> bool:
            try:
                return self.master_of(key) != dead and self._state_ok()
            except (redis.RedisError, LookupError):
                return False

        self._wait(promoted, f"a replica to take over slot of {key!r}", timeout)
        return self.master_of(key)

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if (pid := self._pid(p)) is not None and _alive(pid)]

    def _state_ok(self) -> bool:
        return all(_info(p)["cluster_state"] == "ok" for p in self.live_ports())

    # -- plumbing ------------------------------------------------------------------

    def _pidfile(self, port: int) -> Path:
        return self.directory / f"redis-{port}.pid"

    def _pid(self, port: int) -> int | None:
        try:
            return int(self._pidfile(port).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _wait(condition: object, what: str, timeout: float = START_TIMEOUT) -> None:
        # Synchronous on purpose: the cluster starts before any event loop of the tests.
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster: gave up waiting for {what}")
            time.sleep(0.05)


def _ask(port: int, *command: str) -> Any:
    """One command to one node, on a connection of its own (no pool left behind)."""
    client = redis.Redis(port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def _info(port: int) -> dict[str, str]:
    text = str(_ask(port, "CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _role(port: int) -> dict[str, str]:
    info = _ask(port, "INFO", "replication")  # redis-py parses INFO into a dict
    return {str(k): str(v) for k, v in info.items()}


def _slots(port: int) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) as the node at `port` sees them."""
    rows = _ask(port, "CLUSTER", "SLOTS")
    return [(int(row[0]), int(row[1]), int(row[2][1])) for row in rows]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed daemon is a zombie only of its parent (init): gone as far as we care
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except FileNotFoundError:
        return False


@contextmanager
def shared_cluster(root: Path) -> Iterator[LocalCluster]:
    """The run's one cluster, under `root` (a directory every xdist worker sees)."""
    directory = root / "redis-cluster"
    directory.mkdir(exist_ok=True)
    state = directory / "state.json"

    @contextmanager
    def locked() -> Iterator[None]:
        with open(directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    with locked():
        info = json.loads(state.read_text()) if state.exists() else {"users": 0, "ports": []}
        cluster = LocalCluster(directory, info["ports"])
        if not info["users"] or len(cluster.live_ports()) < NODES:  # none yet, or a run that died
            cluster.stop()
            cluster.start()
        info = {"users": info["users"] + 1, "ports": cluster.ports}
        state.write_text(json.dumps(info))
    try:
        yield cluster
    finally:
        with locked():
            info = json.loads(state.read_text())
            info["users"] -= 1
            if not info["users"]:
                cluster.stop()
                info["ports"] = []
            state.write_text(json.dumps(info))
