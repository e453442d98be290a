"""Fixtures shared by every test: a real Redis server, isolated by key prefix.

The conversation suites (`CLUSTER_SUITES`) run twice: on the Redis at 127.0.0.1:6379 and on a
real Redis Cluster of six local nodes (tests/support/redis_cluster.py), one per run, shared by the
pytest-xdist workers. `TEST_REDIS_CLUSTER=0` leaves the cluster out.
"""

from __future__ import annotations

import fcntl
import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, cast

import pytest
import redis.asyncio as redis
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode, RedisCluster

from bot.app.runtime import open_engine
from bot.config import load_settings
from bot.engine import Engine
from tests.fakes.llm import FakeLLM
from tests.support.clock import REAL_TIME, FastClock
from tests.support.redis_cluster import LocalCluster, shared_cluster

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Test modules whose Redis-backed tests also run on the cluster: the conversation end to end.
CLUSTER_SUITES = frozenset({
    "test_slack_answers", "test_discord_conversations", "test_engine", "test_pacing",
    "test_slack_oauth", "test_slack_multi_workspace_ops", "test_discord_shards", "test_stop", "test_feedback",
    "test_edits",
})


_read_command_table = AsyncCommandsParser.initialize
_COMMAND_TABLE: dict[str, Any] = {}


async def _command_table_once(self: AsyncCommandsParser, node: ClusterNode | None = None) -> None:
    """redis-py's cluster client reads the server's whole command table (`COMMAND`, about 25,000
    RESP3 lines) each time one connects: ~0.1 s of CPU, two clients a test. Every cluster the
    tests start runs the same redis-server, so a worker reads the table once."""
    if not _COMMAND_TABLE:
        await _read_command_table(self, node)
        _COMMAND_TABLE.update(self.commands)
        return
    if node:
        self.node = node
    self.commands = dict(_COMMAND_TABLE)


AsyncCommandsParser.initialize = _command_table_once  # type: ignore[method-assign]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "redis_backend" in metafunc.fixturenames and module in CLUSTER_SUITES:
        cluster = os.environ.get("TEST_REDIS_CLUSTER") != "0" and not metafunc.definition.get_closest_marker(
            "redis_only"
        )
        backends = ["redis", "cluster"] if cluster else ["redis"]
        metafunc.parametrize("redis_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The run's Redis Cluster: started by the first worker that needs it, stopped by the last."""
    base = tmp_path_factory.getbasetemp()  # under xdist, its parent is the run's, shared by the workers
    with shared_cluster(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) as cluster:
        yield cluster


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    """"redis" (the server at REDIS_URL) or "cluster" (the run's Redis Cluster)."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
def redis_url(redis_backend: str, request: pytest.FixtureRequest) -> str:
    if redis_backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return REDIS_URL


# This worker's exclusive hold on the cores, kept from one `alone` test to the next.
_ALONE: list[IO[str]] = []
# Where the workers' lock files are (set by the first test a worker runs).
_LOCKS: list[Path] = []


def _take_cores(root: Path, exclusive: bool) -> IO[str]:
    """A readers-writer lock on files every worker sees: exclusive for `alone` tests, shared for
    the rest. The gate in front makes a waiting `alone` test stop new tests from starting, so
    it is not starved. The lock is held until the returned file is closed."""
    lock = open(root / "cores.lock", "a")  # noqa: SIM115 - held past this function
    with open(root / "cores.gate", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    return lock


@pytest.fixture(autouse=True)
def cores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, tests marked `alone` (load tests whose 429s depend on timing) run while no
    other test does; the others run side by side. The `alone` tests come last
    (`pytest_collection_modifyitems`); a worker holds the cores from one of them to the next
    it runs (`pytest_runtest_teardown`), so the others do not drain in between."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of one run
    if not _LOCKS:
        _LOCKS.append(root)
    if request.node.get_closest_marker("alone") is not None:
        if not _ALONE:
            _ALONE.append(_take_cores(root, exclusive=True))
        # The objects of the hundred tests this worker ran before stay out of the collector's
        # way: a full collection of them, in the middle of a burst of requests, bunches the
        # requests up on arrival as a production bot's small heap would not.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
        return
    with _take_cores(root, exclusive=False):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # A worker's last teardown also stops its session's fixtures (the Redis Cluster's nodes
    # among them): it waits while an `alone` test runs, so as not to jolt its latency. A
    # shared hold taken past the gate, since this worker still holds its test's own.
    finale = None
    if nextitem is None and not _ALONE and _LOCKS:
        finale = open(_LOCKS[0] / "cores.lock", "a")  # noqa: SIM115 - closed below
        fcntl.flock(finale, fcntl.LOCK_SH)
    try:
        return (yield)
    finally:
        if finale is not None:
            finale.close()
        if _ALONE and (nextitem is None or nextitem.get_closest_marker("alone") is None):
            _ALONE.pop().close()


@pytest.fixture
def redis_prefix() -> str:
    """A fresh key prefix per test, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_prefix: str, redis_backend: str, redis_url: str) -> AsyncIterator[redis.Redis]:
    # The cluster client has the same commands; the tests use it as the one they annotate.
    client = cast(redis.Redis, RedisCluster.from_url(redis_url, decode_responses=True)) \
        if redis_backend == "cluster" else redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a test failure
        pytest.fail(f"tests need a Redis server at {redis_url}: {exc}")
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def base_env(
    redis_prefix: str, redis_client: redis.Redis, redis_url: str, redis_backend: str
) -> dict[str, str]:
    """Settings every test starts from: real Redis, no platform, a fake-looking key."""
    return {
        "TOGETHER_API_KEY": "test-key",
        "REDIS_URL": redis_url,
        "REDIS_CLUSTER": "true" if redis_backend == "cluster" else "false",
        "REDIS_PREFIX": redis_prefix,
        "BOT_MODEL": "test/model",
    }


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FastClock:
    """The time the bot and the fakes wait on: faster than the wall (tests/support/clock.py). Real time
    for the load tests that hold the cores (`alone`) and for `real_time` tests: their bot runs
    on the system clock (a process of its own, or the command line's own engine), or they
    count 429s against a margin meant for real jitter."""
    if request.node.get_closest_marker("alone") or request.node.get_closest_marker("real_time"):
        return REAL_TIME
    return FastClock()


@pytest.fixture
async def fake_llm(clock: FastClock) -> AsyncIterator[FakeLLM]:
    async with FakeLLM(clock=clock) as fake:
        yield fake


@pytest.fixture
def engine_env(base_env: dict[str, str], fake_llm: FakeLLM) -> dict[str, str]:
    return base_env | {
        "TOGETHER_BASE_URL": fake_llm.url,
        "LLM_RETRY_BASE_DELAY": "0.01",
        # The model's timeouts stay the product's (30 s): tests of timeouts set their own, and
        # a short one here (it was 2 s, half a second of the wall on the test clock) failed
        # streams that a busy machine started late.
    }


@pytest.fixture
async def engine(engine_env: dict[str, str], clock: FastClock) -> AsyncIterator[Engine]:
    async with open_engine(load_settings(engine_env, dotenv=False), clock) as engine:
        yield engine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`alone` tests last, when the other tests' rush is over. `long` tests first, spread over
    the heads of the workers' first batches, so they wait side by side while the rest fill
    the cores (pytest-xdist's `--dist load` hands each worker a batch of consecutive tests
    first: a quarter of its share)."""
    alone = [item for item in items if item.get_closest_marker("alone") is not None]
    long = [item for item in items if item.get_closest_marker("long") is not None and item not in alone]
    rest = [item for item in items if item not in alone and item not in long]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    batch = max(len(items) // workers // 4, 2)
    ordered: list[pytest.Item] = []
    for worker in range(workers):  # worker k's first batch starts with long tests k, k + workers, …
        heads = long[worker::workers]
        fill = max(batch - len(heads), 0)
        ordered += heads + rest[:fill]
        del rest[:fill]
    items[:] = ordered + rest + alone
