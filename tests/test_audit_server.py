"""The second outside audit's server and memory findings, each as a regression test: DNS rebinding on other
loopback addresses, an unbounded full-text search on the event loop, and an infinite ttl."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from conftest import free_port
from mcp import Client

from ml_expert.memory import MemoryStore
from ml_expert.memory.errors import InvalidInputError
from ml_expert.server.app import build_server
from ml_expert.server.cli import main
from ml_expert.tools.memory_tools import memory_search, memory_store
from ml_expert.tools.settings import Settings
from ml_expert.tools.workspace import Workspace

# -- 3. DNS rebinding: every loopback address checks Host and Origin -----------------------------------------------


def _wait_for(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "the server exited"
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


SERVE = [sys.executable, "-m", "ml_expert.server.cli", "serve", "--transport", "http"]
CLIENT_INFO = {"name": "audit", "version": "1"}


def test_http_on_another_loopback_address_refuses_foreign_host_and_origin(tmp_path: Path) -> None:
    host, port = "127.0.0.2", free_port()
    env = {k: v for k, v in os.environ.items() if k != "ML_EXPERT_TOKEN"}
    proc = subprocess.Popen(
        [*SERVE, "--host", host, "--port", str(port), "-w", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(host, port, proc)
        url = f"http://{host}:{port}/mcp"
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        with httpx.Client(timeout=30) as http:
            evil_host = http.post(url, json=initialize, headers={**headers, "host": "evil.example"})
            evil_port = http.post(url, json=initialize, headers={**headers, "host": f"evil.example:{port}"})
            evil_origin = http.post(url, json=initialize, headers={**headers, "origin": "http://evil.example"})
            right = http.post(url, json=initialize, headers={**headers, "origin": f"http://{host}:{port}"})
        assert (evil_host.status_code, evil_port.status_code, evil_origin.status_code) == (421, 421, 403)
        assert right.status_code == 200 and '"serverInfo"' in right.text

        async def call() -> Any:
            async with Client(url) as c:
                await c.call_tool("memory_store", {"key": "via-127.0.0.2", "value": 7})
                return await c.call_tool("memory_retrieve", {"key": "via-127.0.0.2"})

        assert anyio.run(call).structured_content["value"] == 7
    finally:
        proc.terminate()
        proc.wait(10)


# -- 4. memory_search: bounded, and never on the event loop --------------------------------------------------------


def test_memory_search_is_bounded_and_still_finds_entries(ws: Workspace) -> None:
    memory_store(ws, "notes/gbm", {"text": "gradient boosting beats the dnn"}, tags=["exp-3"])
    memory_store(ws, "notes/other", {"text": "nothing to see"})
    assert [h.entry.key for h in memory_search(ws, "boosting exp").hits] == ["notes/gbm"]
    assert [h.entry.key for h in memory_search(ws, " ".join(["boosting"] * 64)).hits] == ["notes/gbm"]  # the limit
    for query, received in (
        (" ".join(["boosting"] * 65), "received 65 words"),
        ("boosting " * 5000, "received 5000 words"),  # took 7.7 s of the event loop before
        ("b" * 1001, "received 1 words, 1001 bytes"),
    ):
        with pytest.raises(InvalidInputError, match=rf"at most 64 words and 1000 bytes; {received}.*memory_list"):
            memory_search(ws, query)


def test_a_slow_search_does_not_hold_up_other_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release, order = threading.Event(), threading.Event(), []
    search = MemoryStore.search

    def slow_search(self: MemoryStore, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        order.append("search released" if release.wait(30) else "search waited in vain")
        return search(self, *args, **kwargs)

    monkeypatch.setattr(MemoryStore, "search", slow_search)

    async def session() -> Any:
        async with Client(build_server(Settings.from_env(env={}, workspace=tmp_path))) as c:
            await c.call_tool("memory_store", {"key": "notes/gbm", "value": "gradient boosting"})
            found: dict[str, Any] = {}

            async def searching() -> None:
                found["hits"] = await c.call_tool("memory_search", {"query": "boosting"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(searching)
                await anyio.to_thread.run_sync(entered.wait, 30)  # the search is under way
                listed = await c.call_tool("memory_list", {})
                order.append("list answered")
                release.set()
            return listed, found["hits"]

    listed, hits = anyio.run(session)
    assert order == ["list answered", "search released"]  # answered while the search still ran
    assert not listed.is_error and [h["entry"]["key"] for h in hits.structured_content["hits"]] == ["notes/gbm"]


# -- 8. ttl must be finite and sane --------------------------------------------------------------------------------


def test_non_finite_and_absurd_ttls_are_refused(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for ttl in (float("inf"), float("-inf"), float("nan"), 1e999, 0, -5, 11 * 365 * 24 * 3600):
        with pytest.raises(InvalidInputError, match=r"ttl must be a positive, finite number of seconds.*Omit it"):
            memory_store(ws, "k", 1, ttl=ttl)
    assert ws.store.stats().entries == 0
    entry = memory_store(ws, "k", 1, ttl=3600)
    assert entry.expires_at is not None and entry.expires_at - entry.updated_at == pytest.approx(3600)
    assert main(["memory", "store", "k2", "1", "--ttl", "inf", "-w", str(tmp_path / "cli")]) == 2
    assert "ttl must be a positive, finite number" in capsys.readouterr().err
    lines = tmp_path / "inf.jsonl"
    lines.write_text('{"key": "a", "value": 1, "expires_at": Infinity}\n')
    assert main(["memory", "import", str(lines), "-w", str(tmp_path / "cli")]) == 2
    assert "expires_at must be a Unix time (a finite number)" in capsys.readouterr().err
