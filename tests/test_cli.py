"""The `ml-expert` command: memory commands, help, and the README's main job (`ml-expert demo`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ml_expert.server.cli import main


def run(workspace: Path, *args: str) -> int:
    return main([*args[:2], "--workspace", str(workspace), *args[2:]] if args[0] == "memory" else list(args))


def test_memory_commands_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "memory", "store", "ml-expert/metrics", '{"accuracy": 0.97}', "--tag", "demo") == 0
    assert run(tmp_path, "memory", "store", "note", "plain words", "-n", "swarm") == 0
    capsys.readouterr()
    assert run(tmp_path, "memory", "get", "ml-expert/metrics") == 0
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.97}
    assert run(tmp_path, "memory", "get", "note", "-n", "swarm", "--json") == 0
    assert json.loads(capsys.readouterr().out)["value"] == "plain words"
    assert run(tmp_path, "memory", "list", "--all-namespaces") == 0
    table = capsys.readouterr().out
    assert "ml-expert/metrics" in table and "2 of 2 entries" in table
    assert run(tmp_path, "memory", "search", "accuracy", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["entry"]["key"] == "ml-expert/metrics"
    assert run(tmp_path, "memory", "stats") == 0
    assert json.loads(capsys.readouterr().out)["namespaces"] == {"default": 1, "swarm": 1}
    assert run(tmp_path, "memory", "delete", "note", "-n", "swarm") == 0
    assert json.loads(capsys.readouterr().out)["deleted"] is True
    assert run(tmp_path, "memory", "get", "note", "-n", "swarm") == 2
    assert "No memory entry with key 'note'" in capsys.readouterr().err


def test_export_and_import_move_memory_between_workspaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "memory", "store", "ml-expert/metrics", '{"r2": 0.8}')
    run(a, "memory", "store", "k", "1", "-n", "other")
    dump = tmp_path / "mem.jsonl"
    capsys.readouterr()
    assert run(a, "memory", "export", "--output", str(dump)) == 0  # one namespace, and it says so
    assert len(dump.read_text().splitlines()) == 1
    err = capsys.readouterr().err
    assert "only namespace 'default' was exported; 1 entries of ['other'] were not (add --all-namespaces" in err
    assert run(a, "memory", "export", "--all-namespaces", "--output", str(dump)) == 0
    assert "only namespace" not in capsys.readouterr().err
    assert len(dump.read_text().splitlines()) == 2
    capsys.readouterr()
    assert run(b, "memory", "import", str(dump)) == 0
    assert json.loads(capsys.readouterr().out) == {"imported": 2}
    assert run(b, "memory", "get", "ml-expert/metrics") == 0
    assert json.loads(capsys.readouterr().out) == {"r2": 0.8}


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["memory", "list"], ["run"], ["demo"], ["runs"], ["report"], ["predict"], ["explain"], ["cancel"]],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ml-expert" in out and len(out) > 200


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("ml-expert 0.")


def test_demo_runs_every_phase_in_the_fast_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job with a linear model, in-process: its arguments are `run`'s less some options (a
    `run` option read without a default crashed `ml-expert demo` at once, and only the slow layer ran it)."""
    assert main(["demo", "-a", "linear", "-w", str(tmp_path)]) == 0, capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    assert "beats the baseline" in out and "verified: True" in out
    assert float(out.split("test balanced_accuracy ")[1].split()[0]) >= 0.95  # a logistic regression: 0.975


@pytest.mark.slow
def test_demo_is_the_readme_main_job(tmp_path: Path) -> None:
    env = {**os.environ, "ML_EXPERT_WORKSPACE": str(tmp_path)}
    cli = [sys.executable, "-m", "ml_expert.server.cli"]
    proc = subprocess.run([*cli, "demo"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "beats the baseline" in out and "verified: True" in out
    report = Path(next(line.split()[-1] for line in out.splitlines() if line.startswith("Report:")))
    package = Path(next(line.split()[-1] for line in out.splitlines() if line.startswith("Deployment package:")))
    assert "# Model Evaluation Report" in report.read_text() and (package / "inference.py").exists()
    runs = subprocess.run([*cli, "runs"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    run_id = report.parent.name
    assert run_id in runs and "1 of 1 runs" in runs
    jobs = subprocess.run([*cli, "jobs"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert "succeeded" in jobs
    printed = subprocess.run([*cli, "report", run_id], capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert "## Performance Metrics" in printed

    # a person uses the model without writing Python: the predict and explain tools' code, with their output paths
    scored = subprocess.run(
        [*cli, "predict", run_id, "ml-expert-demo/breast_cancer.csv"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "569 of 569 rows scored, 0 refused." in scored.stdout
    written = Path(next(line.split()[-1] for line in scored.stdout.splitlines() if line.startswith("Predictions CSV:")))
    assert written.read_text().count("\n") == 570  # a header and one line per row
    explained = subprocess.run(
        [*cli, "explain", run_id, "--top", "3"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert explained.returncode == 0, explained.stderr[-2000:]
    assert "Permutation importance (balanced_accuracy on" in explained.stdout
    assert len([line for line in explained.stdout.splitlines() if " ± " in line]) == 3
    assert (tmp_path / ".ml-expert" / "runs" / run_id / "importance.json").exists()


def _wait_for_training(tmp_path: Path, timeout: float = 120) -> Any:
    """The workflow job's row once its train phase reports progress (read from the workspace's job store)."""
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(tmp_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            rows, _ = ws.job_store.list(status="running", limit=1)
            if rows and "train" in str(rows[0].progress.get("phase", "")):
                return rows[0]
            time.sleep(0.2)
        raise AssertionError("the workflow never reached its train phase")
    finally:
        ws.close()


@pytest.mark.slow
def test_ctrl_c_cancels_the_run_stops_its_worker_and_says_how_to_resume(tmp_path: Path) -> None:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=6000, n_features=20, random_state=0)
    rows = [",".join([*(f"f{i}" for i in range(20)), "y"])] + [
        ",".join([*map(str, x), str(t)]) for x, t in zip(X, y, strict=True)
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "ML_EXPERT_WORKSPACE": str(tmp_path)}
    cli = [sys.executable, "-m", "ml_expert.server.cli"]
    proc = subprocess.Popen(
        [*cli, "run", "data.csv", "--target", "y", "--time-budget", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    job = _wait_for_training(tmp_path)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the command (its worker runs in its own session)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert f"Job {job.job_id} cancelled." in err and f"ml-expert run --resume {job.run_id}" in err
    jobs = subprocess.run([*cli, "jobs"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert "cancelled" in jobs and "running" not in jobs
    with pytest.raises(ProcessLookupError):  # the worker is gone, not orphaned
        os.kill(job.pid, 0)


def test_ctrl_c_while_following_raises_a_flag_the_wait_loop_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during `follow` (in-process, fast): the job is cancelled through the flag the wait loop polls,
    the worker stops, the command says how to resume and exits 130, and the SIGINT handler from before is back
    (even SIG_IGN, as a background shell job inherits: `follow` handles Ctrl-C itself either way)."""
    import threading

    from ml_expert.server.cli_use import follow
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.jobs = JobManager(ws, max_jobs=1)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ws.job_store.insert("job_00c0ffee", kind="train", run_id=None, namespace="default", spec={}, owner_pid=os.getpid())
    ws.job_store.claim(os.getpid(), 1)
    ws.job_store.set_pid("job_00c0ffee", worker.pid)

    def play_worker() -> None:  # what a worker does at its next step once a cancel is requested
        other = Workspace(tmp_path)
        while not other.job_store.cancel_requested("job_00c0ffee"):
            time.sleep(0.05)
        other.job_store.finish("job_00c0ffee", "cancelled", error="Cancelled at a step boundary.")
        other.close()
        worker.kill()
        worker.wait()  # reaped: a zombie would still answer kill(pid, 0)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in a background shell job
    player = threading.Thread(target=play_worker, daemon=True)
    player.start()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.raises(SystemExit) as stopped:
            follow(ws, "job_00c0ffee", "Resume it with `ml-expert run --resume run_x`.")
    finally:
        worker.kill()
        ws.close()
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "Job job_00c0ffee cancelled. Resume it with `ml-expert run --resume run_x`." in err
    assert signal.getsignal(signal.SIGINT) is before  # the handler from before `follow` is back
    player.join(5)
    assert worker.wait(5) is not None


WORKER_THAT_REACHES_NO_STEP = """
import os, signal, sys, time
from ml_expert.tools.jobs import worker
from ml_expert.tools.jobs.specs import JobSpec
from ml_expert.tools.workspace import Workspace

def busy_in_a_long_fit(ws, spec, reporter):  # never reaches a step, so never sees the cancel flag
    time.sleep(120)

worker.handler_for = lambda kind: (JobSpec, busy_in_a_long_fit)
signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # as worker.main does
ws = Workspace(sys.argv[1])
ws.job_store.set_pid(sys.argv[2], os.getpid())
worker.run_job(ws, sys.argv[2])
"""


def test_a_cancel_the_worker_does_not_reach_in_time_stops_it_with_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cancel_and_wait` (Ctrl-C, `ml-expert cancel`): a worker busy where it checks no cancel gets SIGTERM after
    CANCEL_WAIT_S, ends its job cancelled and exits; the command says so."""
    from ml_expert.server import cli_use
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.workspace import Workspace

    monkeypatch.setattr(cli_use, "CANCEL_WAIT_S", 1.0)
    ws = Workspace(tmp_path)
    ws.jobs = JobManager(ws, max_jobs=1)
    spec = {"run_id": "run_0000cafe"}
    ws.job_store.insert("job_0000cafe", kind="train", run_id=None, namespace="default", spec=spec, owner_pid=1)
    ws.job_store.claim(1, 1)
    proc = subprocess.Popen([sys.executable, "-c", WORKER_THAT_REACHES_NO_STEP, str(tmp_path), "job_0000cafe"])
    try:
        deadline = time.monotonic() + 60
        while ws.job_store.get("job_0000cafe").pid != proc.pid:  # type: ignore[union-attr]
            assert time.monotonic() < deadline and proc.poll() is None, "the stand-in worker never started"
            time.sleep(0.05)
        status = cli_use.cancel_and_wait(ws, "job_0000cafe")
        assert proc.wait(10) == 0  # it ended its job and exited, not killed
    finally:
        proc.kill()
        ws.close()
    assert status.status == "cancelled" and "SIGTERM" in (status.error or "")
    assert "stopped it with SIGTERM" in capsys.readouterr().err


@pytest.mark.parametrize("asked", [True, False])
def test_a_worker_stopped_by_sigterm_ends_cancelled_when_a_cancel_was_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: bool
) -> None:
    """The CLI's Ctrl-C sends SIGTERM (KeyboardInterrupt in the worker) to a worker that reached no step within
    CANCEL_WAIT_S: the job ends cancelled, as asked; a SIGTERM nobody asked a cancel for (a server shutting down)
    ends it interrupted, resumable."""
    from ml_expert.tools.jobs import worker
    from ml_expert.tools.jobs.specs import JobSpec
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(tmp_path)

    def busy_in_a_long_fit(ws: Workspace, spec: JobSpec, reporter: Any) -> None:
        if asked:
            ws.job_store.request_cancel("job_0000beef")
        raise KeyboardInterrupt  # what the worker's SIGTERM handler raises

    monkeypatch.setattr(worker, "handler_for", lambda kind: (JobSpec, busy_in_a_long_fit))
    spec = {"run_id": "run_0000beef"}
    ws.job_store.insert("job_0000beef", kind="train", run_id=None, namespace="default", spec=spec, owner_pid=1)
    worker.run_job(ws, "job_0000beef")
    row = ws.job_store.get("job_0000beef")
    ws.close()
    assert row is not None and row.status == ("cancelled" if asked else "interrupted"), row
    assert ("SIGTERM" in (row.error or "")) is asked


def test_an_interrupt_just_after_begin_leaves_no_write_lock(tmp_path: Path) -> None:
    """A KeyboardInterrupt between BEGIN IMMEDIATE and the body rolls back: the next write (another
    connection too) gets the lock at once instead of waiting for a transaction nobody will end."""
    import sqlite3

    from ml_expert.memory.database import Database

    db = Database(tmp_path / "memory.db")

    def interrupted_begin(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        raise KeyboardInterrupt

    db._begin = interrupted_begin  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), db.transaction():
        pass
    assert not db.conn.in_transaction
    other = sqlite3.connect(tmp_path / "memory.db", timeout=0)
    other.execute("BEGIN IMMEDIATE")  # would raise "database is locked" with the lock still held
    other.execute("ROLLBACK")
    other.close()
    db.close()


def test_cancel_command_cancels_a_queued_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.job_store.insert("job_0123abcd", kind="train", run_id=None, namespace="default", spec={}, owner_pid=1)
    ws.close()
    assert main(["cancel", "job_0123abcd", "--workspace", str(tmp_path)]) == 0
    assert "Job job_0123abcd cancelled: Cancelled before it started." in capsys.readouterr().out
    assert main(["cancel", "../etc", "--workspace", str(tmp_path)]) == 2


def test_a_mistyped_workspace_is_an_error_not_an_empty_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ml-expert runs -w typo` created typo/.ml-expert and answered "0 of 0 runs"; `-w file.csv` raised a
    FileExistsError traceback."""
    typo = tmp_path / "typo"
    for command in (["runs"], ["jobs"], ["memory", "list"], ["report", "run_0123abcd"]):
        assert main([*command, "-w", str(typo)]) == 2
        assert f"No workspace at {typo}: the folder does not exist" in capsys.readouterr().err
    assert not typo.exists()
    (tmp_path / "file.csv").write_text("a\n1\n")
    assert main(["runs", "-w", str(tmp_path / "file.csv")]) == 2
    assert "is a file; pass a folder with -w" in capsys.readouterr().err
    assert main(["memory", "store", "k", "1", "-w", str(typo)]) == 0  # a write makes the workspace, as run does
    assert main(["runs", "-w", str(typo)]) == 0 and "0 of 0 runs" in capsys.readouterr().out


def test_output_piped_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    """`ml-expert memory export | head -1` ended with a BrokenPipeError traceback."""
    dump = tmp_path / "many.jsonl"  # 300 KB: more than a pipe holds, so the writer meets the closed pipe
    dump.write_text("".join(json.dumps({"key": f"k{i:04d}", "value": "x" * 1000}) + "\n" for i in range(300)))
    assert run(tmp_path, "memory", "import", str(dump)) == 0
    cli = f"{sys.executable} -m ml_expert.server.cli memory export --workspace {tmp_path}"
    proc = subprocess.run(["bash", "-c", f"{cli} | head -1"], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout)["key"] == "k0000" and proc.stderr == ""
