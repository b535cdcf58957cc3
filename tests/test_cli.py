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
    assert run(a, "memory", "export", "--all-namespaces", "--output", str(dump)) == 0
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


def test_cancel_command_cancels_a_queued_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ml_expert.tools.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.job_store.insert("job_0123abcd", kind="train", run_id=None, namespace="default", spec={}, owner_pid=1)
    ws.close()
    assert main(["cancel", "job_0123abcd", "--workspace", str(tmp_path)]) == 0
    assert "Job job_0123abcd cancelled: Cancelled before it started." in capsys.readouterr().out
    assert main(["cancel", "../etc", "--workspace", str(tmp_path)]) == 2
