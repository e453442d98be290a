"""Redis Cluster and Sentinel for real: which client the settings pick, the key layout's
hash slots, and a failover in the middle of an answer (docs/operations.md, "Redis Cluster
and Sentinel"). The conversation suites also run whole on the cluster (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import key_slot
from redis.exceptions import MovedError

from bot.app.runtime import open_engine
from bot.config import ConfigError, load_settings
from bot.engine import Engine
from bot.state import store
from bot.state.interface import Bounds, StoreError
from bot.state.keys import Keys
from bot.state.redis_store import RedisStore
from tests.fakes.llm import Answer, FakeLLM
from tests.support.core import conversation, turn
from tests.support.helpers import free_port, wait_until
from tests.support.private_redis import REDIS_NO_DISK
from tests.support.redis_cluster import LocalCluster
from tests.support.surfaces import RecordingSurface


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of the test's own: the failover kills one of its masters."""
    cluster = LocalCluster(tmp_path)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_scripts_keys_share_one_slot() -> None:
    keys = Keys("chatbot")
    conv = conversation()
    assert key_slot(keys.history(conv).encode()) == key_slot(keys.lock(conv).encode())
    # One write's windows (one Lua call) belong to one owner: one slot for all of them.
    windows = keys.pace("slack:T1:chat.update") + keys.pace("slack:T1:chat.postMessage:C9")
    assert len({key_slot(k.encode()) for k in windows}) == 1
    # Different conversations spread over the cluster instead of all landing on one node.
    slots = {key_slot(keys.history(conversation(thread=f"t{i}")).encode()) for i in range(50)}
    assert len(slots) > 40


async def test_cluster_is_found_out_at_start_and_said(
    redis_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.state.store")
    settings = load_settings({"REDIS_URL": redis_cluster.url}, dotenv=False)
    assert settings.redis_cluster is None
    client = await store.connect(settings)
    try:
        assert isinstance(client, RedisCluster)
        assert await client.ping()
    finally:
        await client.aclose()
    assert "cluster_enabled:1" in caplog.text and "Redis Cluster client" in caplog.text


async def test_a_plain_server_gets_the_single_server_client(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.state.store")
    client = await store.connect(load_settings({"REDIS_URL": base_env["REDIS_URL"]}, dotenv=False))
    try:
        assert isinstance(client, redis.Redis)
    finally:
        await client.aclose()
    assert "cluster_enabled:0" in caplog.text and "single-server client" in caplog.text


async def test_redis_cluster_false_skips_the_question(redis_cluster: LocalCluster) -> None:
    # Told it is not a cluster, the bot believes it: the node then refuses keys of other slots.
    settings = load_settings({"REDIS_URL": redis_cluster.url, "REDIS_CLUSTER": "false"}, dotenv=False)
    client = await store.connect(settings)
    try:
        assert isinstance(client, redis.Redis)
        with pytest.raises(MovedError):
            for i in range(20):  # some of these keys live on another node
                await client.get(f"probe-{i}")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER is not"),
        ({"REDIS_SENTINELS": "nohost", "REDIS_SENTINEL_MASTER": "m"}, "host:port"),
        ({"REDIS_SENTINELS": "h:99999", "REDIS_SENTINEL_MASTER": "m"}, "host:port"),
        ({"REDIS_SENTINELS": "h:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_CLUSTER": "true"}, "keep one"),
        ({"REDIS_CLUSTER": "perhaps"}, "REDIS_CLUSTER='perhaps' is not valid"),
    ],
)
def test_bad_redis_topology_settings_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_settings(env, dotenv=False)


@pytest.mark.long
async def test_answers_survive_a_master_failover(
    own_cluster: LocalCluster, engine_env: dict[str, str], fake_llm: FakeLLM
) -> None:
    """The master holding the conversation dies mid-answer: the answer finishes (or is marked
    interrupted), nothing crashes, and once its replica is promoted the next answers are
    stored there, the one that finished during the failover included."""
    env = engine_env | {"REDIS_URL": own_cluster.url, "REDIS_CLUSTER": "true"}
    async with open_engine(load_settings(env, dotenv=False)) as engine:
        engine.store_state.retry_after = 0.2  # the breaker's pause after a failure, shortened
        fake_llm.answer = Answer.of("warm up answer")
        assert (await engine.answer(turn("warm up"))).outcome == "ok"

        key = engine.keys.history(conversation())
        dead = own_cluster.master_of(key)
        fake_llm.answer = Answer.words(40, tokens_per_second=20, tag="during")  # about 2 s
        during = RecordingSurface()
        answering = asyncio.create_task(engine.answer(turn("long question", surface=during)))
        await wait_until(lambda: during.text)  # streaming: the lock is held on the master
        await asyncio.to_thread(own_cluster.kill, dead)

        outcome = await asyncio.wait_for(answering, 60)
        assert outcome.outcome in {"ok", "interrupted"}
        if outcome.outcome == "ok":
            assert during.text == fake_llm.answer.text
        else:
            assert "interrupted" in during.text.lower()

        promoted = await asyncio.to_thread(own_cluster.wait_promoted, key, dead)
        assert promoted != dead
        fake_llm.answer = Answer.of("after the failover")
        after = await _answer_stored(engine, "next question")
        assert after.text == "after the failover"
        stored = [e.content for e in await engine.conversations.load(conversation())]
        assert stored[-1] == "after the failover"
        # The answer streamed while the master died is in the history too, before the next one.
        assert next(i for i, text in enumerate(stored) if "during" in text) < len(stored) - 1


async def _answer_stored(engine: Engine, text: str) -> RecordingSurface:
    """Ask until an answer is stored in Redis (the breaker may skip Redis for a moment)."""
    surfaces: list[RecordingSurface] = []

    async def stored() -> bool:
        surface = RecordingSurface()
        surfaces.append(surface)
        outcome = await engine.answer(turn(f"{text} {len(surfaces)}", surface=surface))
        assert outcome.outcome == "ok", outcome
        try:
            contents = [e.content for e in await engine.conversations.load(conversation())]
        except StoreError:  # a connection to the old master, dropped on the way
            return False
        return surface.text in contents

    await wait_until(stored, timeout=30, interval=0.2)
    return surfaces[-1]


# ---- Sentinel ------------------------------------------------------------------------------


class SentinelSet:
    """A master, its replica and one sentinel (quorum 1), all on free local ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        base = [server, "--bind", "127.0.0.1", *REDIS_NO_DISK]
        self._run(self.master, [*base, "--port", str(self.master)])
        self._run(self.replica, [*base, "--port", str(self.replica),
                                 "--replicaof", "127.0.0.1", str(self.master)])
        conf = self.directory / "sentinel.conf"  # Sentinel rewrites its file: one of its own
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master} 1\n"
            "sentinel down-after-milliseconds mymaster 500\n"
            "sentinel failover-timeout mymaster 5000\n"
        )
        # `redis-sentinel` is this same binary under another name (Debian ships it so).
        self._run(self.sentinel, [server, str(conf), "--sentinel"])

    def _run(self, port: int, args: list[str]) -> None:
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    async def master_port(self) -> int:
        client = redis.Redis(port=self.sentinel, decode_responses=True)
        try:
            _, port = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            return int(port)
        finally:
            await client.aclose()

    async def ready(self) -> None:
        """Until the replica follows the master and the sentinel knows both."""
        async def replica_known() -> bool:
            client = redis.Redis(port=self.sentinel, decode_responses=True)
            try:
                replicas = await client.execute_command("SENTINEL", "REPLICAS", "mymaster")
                return any(int(r["port"]) == self.replica for r in replicas)  # parsed by redis-py
            except (redis.RedisError, OSError):
                return False
            finally:
                await client.aclose()

        await wait_until(replica_known, timeout=20, interval=0.1)


@pytest.fixture
async def sentinels(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    group = SentinelSet(tmp_path)
    group.start()
    try:
        await group.ready()
        yield group
    finally:
        group.stop()


async def test_sentinel_names_the_master_and_its_successor(
    sentinels: SentinelSet, engine_env: dict[str, str], fake_llm: FakeLLM, redis_prefix: str
) -> None:
    env = {k: v for k, v in engine_env.items() if k not in {"REDIS_URL", "REDIS_CLUSTER"}} | {
        "REDIS_SENTINELS": f"127.0.0.1:{sentinels.sentinel}", "REDIS_SENTINEL_MASTER": "mymaster",
    }
    async with open_engine(load_settings(env, dotenv=False)) as engine:
        engine.store_state.retry_after = 0.2
        fake_llm.answer = Answer.of("before the failover")
        assert (await engine.answer(turn("first"))).outcome == "ok"
        key = engine.keys.history(conversation())
        on_master = redis.Redis(port=sentinels.master, decode_responses=True)
        try:
            assert await on_master.llen(key) == 2  # stored on the master Sentinel named
            assert await on_master.execute_command("WAIT", 1, 5000) == 1  # and on its replica
        finally:
            await on_master.aclose()

        await asyncio.to_thread(sentinels.kill, sentinels.master)
        await wait_until(lambda: _promoted(sentinels), timeout=30, interval=0.1)

        fake_llm.answer = Answer.of("after the failover")
        await _answer_stored(engine, "second")
        on_replica = redis.Redis(port=sentinels.replica, decode_responses=True)
        try:
            stored = await on_replica.lrange(key, 0, -1)
        finally:
            await on_replica.aclose()
        assert any("before the failover" in s for s in stored)  # replicated before the master died
        assert any("after the failover" in s for s in stored)  # written to the promoted replica


async def _promoted(group: SentinelSet) -> bool:
    return await group.master_port() == group.replica


def test_sentinel_settings_are_read() -> None:
    settings = load_settings({
        "REDIS_SENTINELS": "sentinel-0:26379, sentinel-1:26380", "REDIS_SENTINEL_MASTER": "mymaster",
    }, dotenv=False)
    assert settings.redis_sentinels == (("sentinel-0", 26379), ("sentinel-1", 26380))
    assert settings.redis_url == "redis://mymaster/0"  # Redis is configured: not the embedded store
    assert settings.redis_cluster is None
    with_password = load_settings({
        "REDIS_SENTINELS": "s:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://:pw@m/2",
    }, dotenv=False)
    assert "pw" in with_password.secrets()  # redacted from logs like any Redis password


async def test_the_stores_pipelines_and_transactions_work_on_the_cluster(
    redis_cluster: LocalCluster, redis_prefix: str
) -> None:
    """The store's transactions (one slot each) and its pipelines over several slots, on the
    cluster client: replace a persona, forget a history, close a process's records."""
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    store_ = RedisStore(client, redis_prefix)
    scope = conversation().channel_scope
    try:
        await store_.save_persona(scope, {"prompt": "one", "preset": "pirate"})
        await store_.save_persona(scope, {"prompt": "two"})
        assert await store_.persona(scope) == {"prompt": "two"}  # replaced, not merged

        bounds = Bounds(3600, 50)
        begun = await store_.start_turn(conversation(), "tok", '{"role":"user","content":"hi"}', bounds)
        assert begun.history == ['{"role":"user","content":"hi"}']
        await store_.finish_turn(conversation(), "tok", '{"role":"assistant","content":"yo"}', bounds)
        assert await store_.forget(conversation(), "MARK", bounds) == [
            '{"role":"user","content":"hi"}', '{"role":"assistant","content":"yo"}']
        assert await store_.load(conversation()) == ["MARK"]

        owner = "proc-1"
        await client.sadd(store_.keys.owners, owner)
        await client.set(store_.keys.heartbeat(owner), "1")
        assert await store_.alive([owner, "proc-2"]) == [True, False]
        await store_.close_owner(owner)  # no records left: the owner goes too
        assert not await client.exists(store_.keys.heartbeat(owner))
        assert await store_.owners() == set()
    finally:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
