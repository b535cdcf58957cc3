"""The namespaced SQLite memory: values, namespaces, TTL, limits, list/search, concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from ml_expert.memory import MemoryStore
from ml_expert.memory.errors import InvalidInputError, NotFoundError


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> MemoryStore:
    return MemoryStore(tmp_path / "memory.db", clock=clock)


@pytest.mark.parametrize(
    "value",
    [{"accuracy": 0.97, "classes": ["a", "b"], "nested": {"x": None}}, [1, 2.5, "three"], "text", 42, 3.25, True, None],
)
def test_values_come_back_as_the_same_json(store: MemoryStore, value: object) -> None:
    store.store("ml-expert/metrics", value)
    assert store.retrieve("ml-expert/metrics").value == value


def test_key_with_slashes_is_one_key_and_namespaces_are_separate(store: MemoryStore) -> None:
    store.store("ml-expert/metrics", {"acc": 1}, namespace="default")
    store.store("ml-expert/metrics", {"acc": 2}, namespace="swarm-1")
    assert store.retrieve("ml-expert/metrics").value == {"acc": 1}
    assert store.retrieve("ml-expert/metrics", namespace="swarm-1").value == {"acc": 2}
    page = store.list(namespace=None)
    assert [(e.namespace, e.key) for e in page.entries] == [
        ("default", "ml-expert/metrics"),
        ("swarm-1", "ml-expert/metrics"),
    ]


def test_upsert_keeps_created_at_and_counts_accesses(store: MemoryStore, clock: Clock) -> None:
    first = store.store("k", 1, tags=["a"])
    clock.now += 10
    second = store.store("k", 2, tags=["b"])
    assert second.created_at == first.created_at and second.updated_at == first.updated_at + 10
    store.retrieve("k")
    entry = store.retrieve("k")
    assert entry.value == 2 and entry.tags == ["b"] and entry.access_count == 2 and entry.accessed_at == clock.now


def test_missing_key_error_names_the_key_and_what_to_do(store: MemoryStore) -> None:
    store.store("ml-expert/metrics", 1)
    with pytest.raises(NotFoundError, match=r"'ml-expert/metric'.*namespace 'default'.*ml-expert/metrics.*memory_list"):
        store.retrieve("ml-expert/metric")
    with pytest.raises(NotFoundError) as missing:  # % and _ are characters of a key, not wildcards
        store.retrieve("%")
    assert "same prefix" not in str(missing.value)


def test_ttl_expires_entries_with_an_injected_clock(store: MemoryStore, clock: Clock) -> None:
    store.store("short", "x", ttl=60)
    store.store("forever", "y")
    clock.now += 59
    assert store.retrieve("short").value == "x"
    clock.now += 2
    with pytest.raises(NotFoundError):
        store.retrieve("short")
    assert [e.key for e in store.list().entries] == ["forever"]
    assert store.search("x") == []
    assert store.purge_expired() == 1
    assert store.query("SELECT count(*) AS n FROM memory")[0]["n"] == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "non-empty"), ("k" * 1025, "at most 1024"), ("bad\nkey", "control characters"), ("nul\x00", "control")],
)
def test_bad_keys_are_refused(store: MemoryStore, key: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        store.store(key, 1)
    with pytest.raises(InvalidInputError, match=message):
        store.store("ok", 1, namespace=key)


def test_value_size_limit_and_non_json_values(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db", max_value_bytes=100)
    store.store("small", "x" * 50)
    with pytest.raises(InvalidInputError, match="limit is 100"):
        store.store("big", "x" * 200)
    with pytest.raises(InvalidInputError, match="JSON"):
        store.store("nan", float("nan"))
    with pytest.raises(InvalidInputError, match="ttl must be a positive"):
        store.store("t", 1, ttl=0)
    assert store.retrieve("small").value == "x" * 50  # earlier data untouched by the refusals


def test_a_value_nested_too_deep_is_refused_and_the_namespace_stays_listable(store: MemoryStore) -> None:
    """A value nested 300 levels deep was stored (from the CLI, an import), and then every memory_list of its
    namespace failed in the MCP server's serializer with an empty error."""
    store.store("ok", {"a": [[{"b": 1}]]})
    deep = json.loads("[" * 300 + "1" + "]" * 300)
    with pytest.raises(InvalidInputError, match=r"nested more than 100 levels deep"):
        store.store("deep", deep)
    with pytest.raises(InvalidInputError, match=r"Record 1: value is nested"):
        store.import_entries([{"key": "deep", "value": {"x": deep}}])
    edge = json.loads("[" * 100 + "1" + "]" * 100)
    store.store("edge", edge)
    assert store.retrieve("edge").value == edge
    assert sorted(e.key for e in store.list().entries) == ["edge", "ok"]
    with store._write() as conn:  # one stored before the limit: read back as its JSON text, never an error
        conn.execute("UPDATE memory SET value = ? WHERE key = 'ok'", (json.dumps(deep),))
    old = store.retrieve("ok")
    assert old.truncated and old.value == json.dumps(deep) + "…" and old.value_bytes == len(json.dumps(deep))
    assert {e.key: e.truncated for e in store.list().entries} == {"edge": False, "ok": True}


def test_list_prefix_paging_and_total(store: MemoryStore) -> None:
    for i in range(25):
        store.store(f"ml-expert/runs/run_{i:02d}/metrics", i)
    store.store("other/key", 0)
    page = store.list(prefix="ml-expert/runs/", limit=10, offset=20)
    assert page.total == 25 and [e.value for e in page.entries] == [20, 21, 22, 23, 24]
    assert store.list(prefix="%", limit=5).total == 0  # LIKE wildcards are literal


def test_search_is_ranked_filtered_and_safe(store: MemoryStore) -> None:
    store.store("ml-expert/metrics", {"accuracy": 0.97, "dataset": "breast cancer"})
    store.store("notes", "the breast cancer data had one breast cancer leakage suspect about cancer")
    store.store("unrelated", {"loss": 0.3})
    store.store("elsewhere", "breast cancer", namespace="other")
    hits = store.search("breast cancer")
    assert [h.entry.key for h in hits] == ["notes", "ml-expert/metrics"]
    assert hits[0].score >= hits[1].score
    assert [h.entry.key for h in store.search("cancer", namespace="other")] == ["elsewhere"]
    assert len(store.search("cancer", namespace=None)) == 3
    assert store.search('ml-expert/metrics "AND OR (') == []  # FTS syntax in user text is quoted, never an error
    # A NUL or another control character separates words (it used to end SQLite's query text: "unterminated string")
    assert [h.entry.key for h in store.search("breast\x00cancer\x07")] == ["notes", "ml-expert/metrics"]
    with pytest.raises(InvalidInputError, match="at least one word"):
        store.search("\x00\t")
    with pytest.raises(InvalidInputError, match="at least one word"):
        store.search("   ")


def test_delete_stats_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = MemoryStore(path)
    store.store("a", 1)
    store.store("b", [1, 2], namespace="x")
    assert store.delete("a") is True and store.delete("a") is False
    stats = store.stats()
    # key, value and tags all count: "b" + "[1, 2]" + "[]"
    assert stats.entries == 1 and stats.namespaces == {"x": 1} and stats.value_bytes == len("b[1, 2][]")
    store.close()
    again = MemoryStore(path)  # migrations already applied: reopening changes nothing
    assert again.retrieve("b", namespace="x").value == [1, 2]
    assert again.query("SELECT count(*) AS n FROM _sqlite_migrations")[0]["n"] == 3
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_export_import_round_trip(tmp_path: Path) -> None:
    src = MemoryStore(tmp_path / "a.db")
    src.store("ml-expert/metrics", {"acc": 0.9}, tags=["t"])
    src.store("k", "v", namespace="swarm", ttl=3600)
    lines = [json.dumps(r) for r in src.export_entries()]
    dst = MemoryStore(tmp_path / "b.db")
    assert dst.import_entries(json.loads(line) for line in lines) == 2
    assert dst.retrieve("ml-expert/metrics").tags == ["t"]
    assert dst.retrieve("k", namespace="swarm").expires_at is not None
    with pytest.raises(InvalidInputError, match="Record 1"):
        dst.import_entries([{"nokey": 1}])


def _writer(path: str, worker: int, n: int) -> None:
    store = MemoryStore(path)
    for i in range(n):
        key = f"shared/{i % 50}"  # overlapping keys across processes
        store.store(key, {"worker": worker, "i": i, "payload": "x" * 100})
        store.store(f"own/{worker}/{i}", i)


def test_four_processes_write_concurrently_without_loss(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    MemoryStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 500)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]  # no 'database is locked' escaped
    store = MemoryStore(path)
    for w in range(4):
        page = store.list(prefix=f"own/{w}/", limit=500)
        assert page.total == 500 and sorted(e.value for e in page.entries) == list(range(500))
    shared = store.list(prefix="shared/", limit=100).entries
    assert len(shared) == 50
    assert all(
        set(e.value) == {"worker", "i", "payload"} and e.value["i"] % 50 == int(e.key.split("/")[1]) for e in shared
    )
