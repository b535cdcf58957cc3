"""Workers forked from the warm fork server: a real worker for its job, and a fallback where there is none."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import prepared_run

from ml_expert.tools.jobs import forkserver
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.jobs.tools import get_job
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _running_pid(ws: Workspace, job_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = ws.job_store.get(job_id)
        if row.status == "running" and row.pid and (row.progress or {}).get("phase") not in (None, "starting"):
            return row.pid
        assert row.status in ("queued", "running"), row.error
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start")


def _proc(pid: int, field: str) -> str:
    return (Path("/proc") / str(pid) / field).read_bytes().decode(errors="replace")


def _server_pids() -> set[int]:
    return {server._proc.pid for server in forkserver._servers.values() if server.alive()}


def _server_of(ws: Workspace) -> forkserver.ForkServer:
    """The warm server the workspace's manager forks its workers from (other tests' environments have their own)."""
    server = forkserver.warm_up(ws.jobs._worker_env(), start=False)
    assert server is not None
    return server


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_job_runs_in_a_forked_worker_with_the_managers_env_and_cwd_and_its_kill_is_reported(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = _server_of(jobs_ws)  # the manager started its server when it started
    run = prepared_run(jobs_ws, "wine")
    monkeypatch.chdir(tmp_path)
    status = train(jobs_ws, run, "auto", time_budget_s=120, wait_seconds=0)
    pid = _running_pid(jobs_ws, status.job_id)
    parent = int(_proc(pid, "stat").rsplit(") ", 1)[1].split()[1])
    assert parent == server._proc.pid  # forked by the warm server, not started by this process
    assert os.getsid(pid) == pid  # its own session, as a plain worker: a Ctrl-C at the terminal is not its
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
    assert (jobs_ws.home / "jobs" / f"{status.job_id}.log").exists()  # its output goes to the job's log

    jobs_ws.jobs.kill_worker(status.job_id)  # the exit code comes back through the server
    final = jobs_ws.jobs.wait(status.job_id, 60)
    assert final.status == "failed" and "killed by signal 9" in final.error, final.error

    # A second workspace on the same server: its worker reads that workspace's settings from the environment
    # of its request (the server's own environment names the first workspace; a worker reading it would not
    # find its job there).
    other = Workspace(tmp_path / "other")
    other.jobs = JobManager(other).start()
    try:
        again = train(other, prepared_run(other, "wine"), "linear", wait_seconds=120)
        assert again.status == "succeeded", again.error
        assert again.result["val_metrics"]["accuracy"] >= 0.9
        assert _server_of(other) is server  # the same warm server forked it
    finally:
        other.jobs.stop()
        other.close()


def test_a_dead_fork_server_is_replaced_and_workers_start_plain_where_it_is_off(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    for pid in _server_pids():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _server_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _server_pids()
    first = train(jobs_ws, run, "linear", wait_seconds=120)
    assert first.status == "succeeded", first.error
    assert first.result["val_metrics"]["accuracy"] >= 0.93
    assert _server_of(jobs_ws).alive()  # a new server served it

    monkeypatch.setenv(forkserver.DISABLE_ENV, "0")
    assert forkserver.start_worker("job_00000000", os.devnull, dict(os.environ)) is None
    plain = train(jobs_ws, run, "linear", wait_seconds=120)
    assert plain.status == "succeeded", plain.error
    assert plain.result["val_metrics"] == first.result["val_metrics"]  # same seed, same model either way
    assert get_job(jobs_ws, plain.job_id).status == "succeeded"


def test_sigint_interrupts_a_forked_worker_like_a_plain_one(jobs_ws: Workspace) -> None:
    """A fresh interpreter turns SIGINT into KeyboardInterrupt, which the worker records as an interruption
    (resumable); a forked worker must not die of the signal instead."""
    run = prepared_run(jobs_ws, "wine")
    status = train(jobs_ws, run, "auto", time_budget_s=120, wait_seconds=0)
    pid = _running_pid(jobs_ws, status.job_id)
    os.kill(pid, signal.SIGINT)
    final = jobs_ws.jobs.wait(status.job_id, 60)
    assert final.status == "interrupted", (final.status, final.error)


def test_bad_or_expired_requests_are_refused_and_the_server_keeps_serving(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    server = _server_of(jobs_ws)
    assert server._proc.stdin is not None
    server._proc.stdin.write(b'not json\n[1, 2]\n{"id": 7}\n')  # malformed: refused, nothing forked
    server._proc.stdin.flush()
    monkeypatch.setattr(forkserver, "START_TIMEOUT_S", -1.0)  # every request is expired when the server reads it
    with pytest.raises(OSError, match="expired"):
        server.start("job_00000000", os.devnull, dict(os.environ))
    assert server.alive()
    plain = train(jobs_ws, run, "linear", wait_seconds=120)  # refused by the server: a plain worker runs it
    assert plain.status == "succeeded", plain.error
    monkeypatch.undo()
    forked = train(jobs_ws, run, "linear", wait_seconds=120)  # and the same server serves the next one
    assert forked.status == "succeeded", forked.error
    assert (
        forked.result["val_metrics"] == plain.result["val_metrics"] and forked.result["val_metrics"]["accuracy"] > 0.93
    )
    assert server.alive() and _server_of(jobs_ws) is server
