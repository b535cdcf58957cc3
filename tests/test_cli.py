"""The `ml-expert` command: memory commands, help, and the README's main job (`ml-expert demo`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("command", [[], ["serve"], ["memory", "list"], ["run"], ["demo"], ["runs"], ["report"]])
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
