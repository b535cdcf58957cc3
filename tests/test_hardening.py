"""What an outside audit broke, kept broken-proof: data loss, sandbox escapes, hangs, limits and
half-written state — each as a regression test. Its job-control items (13, 15, 16) are in test_jobs.py, the
property-based fuzz of every tool in test_fuzz.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import joblib
import numpy as np
import pytest
from conftest import free_port, prepared_run, sklearn_frame, snapshot, wait_for_port
from mcp import Client

from ml_expert.memory import MemoryStore
from ml_expert.memory.errors import (
    InvalidInputError,
    PathNotAllowedError,
)
from ml_expert.server.app import build_server
from ml_expert.server.cli import main
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.memory_tools import memory_list, memory_search, memory_store
from ml_expert.tools.packaging.package import package
from ml_expert.tools.settings import Settings
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import run_workflow
from ml_expert.tools.workspace import Workspace


def _trained(ws: Workspace, arch: str = "linear") -> tuple[str, str]:
    run = prepared_run(ws, "wine")
    status = train(ws, run, arch, wait_seconds=120)
    assert status.status == "succeeded", status.error
    return run, status.result["model_id"]


# -- 1. package never deletes or replaces a user's file -----------------------------------------------------


def test_package_output_dir_never_touches_user_files(jobs_ws: Workspace) -> None:
    run, _ = _trained(jobs_ws)
    (jobs_ws.root / "src").mkdir()
    (jobs_ws.root / "src" / "main.py").write_text("print('mine')\n")
    (jobs_ws.root / "notes.txt").write_text("my notes\n")
    before = snapshot(jobs_ws.root)
    refusals = {
        ".": (PathNotAllowedError, "not the workspace itself"),
        "./": (PathNotAllowedError, "not the workspace itself"),
        "src": (InvalidInputError, "not an ml-expert package"),
        "notes.txt": (InvalidInputError, "existing file"),
        ".ml-expert/runs": (PathNotAllowedError, "state folder"),
        "../elsewhere": (PathNotAllowedError, "outside"),
    }
    for output_dir, (error, message) in refusals.items():
        with pytest.raises(error, match=message):
            package(jobs_ws, run, output_dir=output_dir, wait_seconds=60)
        with pytest.raises(error, match=message):  # checked at submit, before a workflow job exists
            run_workflow(jobs_ws, path="wine.csv", target="target", output_dir=output_dir)
    assert snapshot(jobs_ws.root) == before and (jobs_ws.home / "memory.db").exists()
    assert not (jobs_ws.root.parent / "elsewhere").exists()
    first = package(jobs_ws, run, output_dir="deploy/v1", formats=["joblib"], wait_seconds=300)
    assert first.status == "succeeded", first.error
    again = package(jobs_ws, run, output_dir="deploy/v1", formats=["joblib"], wait_seconds=300)  # its own package
    assert again.status == "succeeded", again.error
    assert snapshot(jobs_ws.root).items() >= before.items()
    assert sorted(p.name for p in (jobs_ws.root / "deploy").iterdir()) == ["v1"]  # no build leftovers


# -- 2, 3. nothing is read from outside the workspace --------------------------------------------------------


def test_base_model_id_cannot_walk_out_of_the_workspace(jobs_ws: Workspace, tmp_path: Path) -> None:
    run = prepared_run(jobs_ws, "wine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.keras").write_bytes(b"not really")
    for base in ("mdl_x/../../../../outside/x", "mdl_../../x", str(outside / "x.keras"), "../outside/x.keras"):
        with pytest.raises((InvalidInputError, PathNotAllowedError)) as caught:
            train(jobs_ws, run, "dnn", base_model=base)
        assert "does not exist" not in str(caught.value)  # no oracle for files outside


def test_image_folder_links_to_outside_are_refused(ws: Workspace, tmp_path: Path) -> None:
    from PIL import Image

    secret = tmp_path / "secret"
    secret.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(secret / "s.png")
    for label in ("a", "b"):
        (ws.root / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(ws.root / "imgs" / label / f"{i}.png")
    (ws.root / "imgs" / "a" / "zz.png").symlink_to(secret / "s.png")
    with pytest.raises(InvalidInputError, match="outside the image folder"):
        analyze_data(ws, "imgs")
    (ws.root / "imgs" / "a" / "zz.png").unlink()
    (ws.root / "imgs" / "c").symlink_to(secret, target_is_directory=True)  # a whole class folder
    with pytest.raises(InvalidInputError, match="outside the image folder"):
        analyze_data(ws, "imgs")
    assert ws.runs.list(10)[1] == 0  # no run was started by a refused analysis


# -- 4. only the server's own pickles are ever loaded --------------------------------------------------------


class _Planted:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code ran"))


def test_planted_and_tampered_pickles_are_never_loaded(jobs_ws: Workspace) -> None:
    run, model_id = _trained(jobs_ws)
    marker = jobs_ws.root / "pwned.txt"
    folder = jobs_ws.run_dir(run) / "models"
    evil = folder / "mdl_0e0e0e0e"
    evil.mkdir()
    meta = json.loads((folder / model_id / "model.json").read_text())
    meta |= {"model_id": "mdl_0e0e0e0e", "artifacts": {"model": "evil.joblib"}}
    (evil / "model.json").write_text(json.dumps(meta))
    for name in ("evil.joblib", "model.joblib"):
        joblib.dump(_Planted(marker), evil / name)
    planted = evaluate(jobs_ws, run, model_id="mdl_0e0e0e0e", wait_seconds=120)
    assert planted.status == "failed" and "Refusing to unpickle" in planted.error, planted.error
    joblib.dump(_Planted(marker), folder / model_id / "model.joblib")  # replace the real model
    tampered = evaluate(jobs_ws, run, model_id=model_id, wait_seconds=120)
    assert tampered.status == "failed" and "changed since the server wrote it" in tampered.error
    joblib.dump(_Planted(marker), jobs_ws.run_dir(run) / "preprocessor.joblib")
    packaged = package(jobs_ws, run, model_id=model_id, wait_seconds=120)
    assert packaged.status == "failed" and "Refusing to unpickle" in packaged.error
    assert not marker.exists()


def test_package_readme_says_digests_catch_corruption_not_tampering(jobs_ws: Workspace) -> None:
    run, _ = _trained(jobs_ws)
    result = package(jobs_ws, run, formats=["joblib"], wait_seconds=300)
    guide = (jobs_ws.root / result.result["folder"] / "README.md").read_text()
    assert "catches corruption" in guide and "not tampering" in guide


# -- 5. HTTP beyond loopback needs a token ---------------------------------------------------------------------


def test_http_on_a_public_address_requires_a_bearer_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ML_EXPERT_TOKEN"}
    port = free_port()
    cmd = [sys.executable, "-m", "ml_expert.server.cli", "serve", "--transport", "http", "--host", "0.0.0.0"]
    refused = subprocess.run(
        [*cmd, "--port", str(port), "-w", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "needs a bearer token" in refused.stderr
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "-w", str(tmp_path), "--token", "s3cret-token"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=10)
        assert denied.value.code == 401

        from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

        async def call() -> Any:
            client = create_mcp_http_client(headers={"Authorization": "Bearer s3cret-token"})
            async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=client)) as c:
                await c.call_tool("memory_store", {"key": "via-token", "value": 1})
                return await c.call_tool("memory_retrieve", {"key": "via-token"})

        assert anyio.run(call).structured_content["value"] == 1
    finally:
        proc.terminate()
        proc.wait(10)


# -- 6. no hang on wide files; size guards ------------------------------------------------------------------


@pytest.mark.timeout(120)  # quadratic took hours here; linear takes seconds (timings themselves live in bench/)
@pytest.mark.slow  # 8-10 s: analyze profiles each of the 20,001 columns
def test_wide_files_are_read_in_linear_time_and_huge_ones_refused(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, max_file_bytes=2_000_000)
    rng = np.random.default_rng(0)
    wide = 20_001
    header = ",".join(f"c{i}" for i in range(wide))
    rows = "\n".join(",".join(map(str, rng.integers(0, 9, wide))) for _ in range(5))
    (tmp_path / "wide.csv").write_text(f"{header}\n{rows}\n")
    result = analyze_data(ws, "wide.csv")
    assert result.columns == wide and len(result.column_profiles) <= 40
    (tmp_path / "too_wide.csv").write_text(",".join(f"c{i}" for i in range(100_001)) + "\n" + "1," * 100_000 + "1\n")
    with pytest.raises(InvalidInputError, match="at most 100,000 are supported"):
        analyze_data(ws, "too_wide.csv")
    (tmp_path / "big.csv").write_text("a,b\n" + "1,2\n" * 600_000)
    with pytest.raises(InvalidInputError, match="reads files up to"):
        analyze_data(ws, "big.csv")
    with pytest.raises(InvalidInputError, match="reads files up to"):
        prepare_data(ws, path="big.csv", target="b")


# -- 7, 8. memory limits count everything; lists stay small --------------------------------------------------


def test_tags_and_key_count_toward_the_size_limit(ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="key, value and tags"):
        memory_store(ws, "k", 1, tags=["t" * 1_000_000] * 20)
    with pytest.raises(InvalidInputError, match="limit"):
        memory_store(ws, "k" * 1000, "v" * (ws.settings.max_value_bytes - 500))
    assert ws.store.stats().entries == 0


def test_lists_and_searches_return_previews_of_large_values(ws: Workspace) -> None:
    big = {"blob": "word " * 150_000}
    for i in range(5):
        memory_store(ws, f"big/{i}", big, namespace="n")
    page = memory_list(ws, namespace="n", limit=500)
    assert page.total == 5 and all(e.truncated and e.value_bytes > 700_000 for e in page.entries)
    assert len(page.model_dump_json()) < 30_000
    found = memory_search(ws, "word", namespace="n", limit=100)
    assert len(found.hits) == 5 and len(found.model_dump_json()) < 30_000
    assert ws.store.retrieve("big/0", namespace="n").value == big  # whole through retrieve


# -- 9. a held write lock never blocks the event loop --------------------------------------------------------


def test_a_held_write_lock_blocks_neither_the_loop_nor_other_requests(tmp_path: Path) -> None:
    Workspace(tmp_path).store.store("seen", 1)
    holder = sqlite3.connect(tmp_path / ".ml-expert" / "memory.db", isolation_level=None)
    done: list[str] = []  # the order the two requests finished in
    outcome: dict[str, Any] = {}

    async def main_() -> Any:
        async with Client(build_server(Settings.from_env(env={}, workspace=tmp_path))) as c:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            sent = anyio.Event()

            async def store() -> None:
                sent.set()
                outcome["store"] = await c.call_tool("memory_store", {"key": "k", "value": 1})
                done.append("store")

            async def reads() -> None:
                await sent.wait()  # the store was sent first and waits for the lock
                listed = await c.call_tool("memory_list", {})
                jobs = await c.call_tool("list_jobs", {})
                assert not listed.is_error and not jobs.is_error
                done.append("reads")

            async with anyio.create_task_group() as tg:
                tg.start_soon(store)
                tg.start_soon(reads)
            holder.execute("ROLLBACK")
            return await c.call_tool("memory_store", {"key": "k", "value": 2})

    after = anyio.run(main_)
    busy = outcome["store"]
    assert busy.is_error and "busy" in busy.content[0].text and "Retry" in busy.content[0].text  # then a clear error
    assert done == ["reads", "store"]  # served while the store waited for the lock
    assert not after.is_error


# -- 10. memory import is all or nothing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"key": "a", "value": 1}', "{not json"], "Line 2"),
        (['{"key": "a", "value": 1}', '{"key": "b", "value": 2, "expires_at": "tomorrow"}'], "Record 2: expires_at"),
        (['{"key": "a", "value": 1}', '{"value": 2}'], "Record 2"),
    ],
)
def test_memory_import_validates_everything_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["memory", "import", str(path), "-w", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "othing was imported" in err
    assert MemoryStore(tmp_path / ".ml-expert" / "memory.db").stats().entries == 0


def test_memory_import_of_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "import", str(tmp_path / "nope.jsonl"), "-w", str(tmp_path)]) == 2
    assert "No file" in capsys.readouterr().err


# -- 11, 12. bad values and files get clear errors, and no half-made run ---------------------------------------


def test_infinite_values_are_missing_in_features_and_refused_in_a_target(ws: Workspace) -> None:
    frame = sklearn_frame("diabetes")
    frame.loc[[3, 7], "bmi"] = np.inf
    frame.to_csv(ws.root / "inf_feature.csv", index=False)
    analysis = analyze_data(ws, "inf_feature.csv", target="target")
    assert any(w.code == "infinite_values" and w.column == "bmi" for w in analysis.warnings)
    prepared = prepare_data(ws, run_id=analysis.run_id)
    assert any("±inf" in step.reason for step in prepared.cleaning_log)
    frame.loc[5, "target"] = -np.inf
    frame.to_csv(ws.root / "inf_target.csv", index=False)
    runs_before = ws.runs.list(100)[1]
    for call in (
        lambda: analyze_data(ws, "inf_target.csv", target="target"),
        lambda: prepare_data(ws, path="inf_target.csv", target="target"),
    ):
        with pytest.raises(InvalidInputError, match="infinite values"):
            call()
    assert ws.runs.list(100)[1] == runs_before


def test_bad_npz_and_image_files_get_clear_errors(ws: Workspace) -> None:
    from PIL import Image

    np.savez(ws.root / "objects.npz", X=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    np.savez(ws.root / "flat.npz", X=np.arange(10.0), y=np.arange(10))
    np.savez(ws.root / "noy.npz", X=np.zeros((4, 8, 8)))
    for label in ("a", "b"):
        (ws.root / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(ws.root / "imgs" / label / f"{i}.png")
    (ws.root / "imgs" / "a" / "0.png").write_bytes(b"\x89PNG broken")
    cases = {
        "objects.npz": "holds Python objects",
        "flat.npz": "one row per example",
        "noy.npz": "must hold arrays 'X' and 'y'",
        "imgs": "Cannot read image a/0.png",
    }
    for path, message in cases.items():
        with pytest.raises(InvalidInputError, match=message):
            analyze_data(ws, path)
    assert ws.runs.list(10)[1] == 0


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Bearer s3cret", 200),
        (b"bearer s3cret", 200),  # the scheme is case-insensitive (RFC 7235); a lowercase one got 401
        (b"BEARER  s3cret", 200),
        (b"Bearer S3CRET", 401),  # the token is not
        (b"Basic s3cret", 401),
        (b"s3cret", 401),
        (b"", 401),
    ],
)
def test_the_bearer_scheme_is_case_insensitive_and_the_token_is_not(header: bytes, status: int) -> None:
    from ml_expert.server.http import BearerToken

    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"authorization", header)] if header else []}
    anyio.run(BearerToken(app, "s3cret"), scope, None, send)
    assert sent[0]["status"] == status
