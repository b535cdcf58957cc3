"""Job control: workers forked from the warm fork server (and the plain fallback), orphans after a restart, the
queue's cap, probes that outlast their wait, and parameters checked at submit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import prepared_run, write_dataset

from ml_expert.memory.errors import ConflictError, InvalidInputError, NotFoundError
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.jobs import forkserver, scripts
from ml_expert.tools.jobs import manager as manager_module
from ml_expert.tools.jobs.manager import MAX_QUEUED, JobManager
from ml_expert.tools.jobs.specs import JobSpec
from ml_expert.tools.jobs.tools import get_job
from ml_expert.tools.selection.recommend import recommend_architecture
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import run_workflow
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

    # The exit code comes back through the server, a moment after the pid is gone. Hold the server still so that
    # moment lasts: the manager's orphan check (every tick here) must leave its own worker to the exit code.
    monkeypatch.setattr(manager_module, "ORPHAN_CHECK_SECONDS", 0.0)
    os.kill(server._proc.pid, signal.SIGSTOP)
    try:
        jobs_ws.jobs.kill_worker(status.job_id)
        time.sleep(1.0)
        assert get_job(jobs_ws, status.job_id).status == "running"  # not taken for an orphan ("interrupted")
    finally:
        os.kill(server._proc.pid, signal.SIGCONT)
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


def _log(ws: Workspace, job_id: str) -> str:
    return Path(ws.jobs.log_path(job_id)).read_text(errors="replace")


def _maps_tensorflow(pid: int) -> bool:
    return "_pywrap_tensorflow_internal" in _proc(pid, "maps")


@pytest.mark.slow  # it kills the fork servers: every later test of the session then pays their start again
def test_a_dead_fork_server_is_replaced_and_workers_start_plain_where_it_is_off(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = prepared_run(jobs_ws, "breast_cancer")
    folders = [Path(s.socket_path).parent for s in forkserver._servers.values() if s.alive() and s.socket_path]
    assert folders and all(folder.is_dir() for folder in folders)
    for pid in _server_pids():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (_server_pids() or any(f.exists() for f in folders)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _server_pids()
    assert not [f for f in folders if f.exists()]  # their script sockets' folders do not pile up in /tmp
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


@pytest.mark.slow  # three processes and a network; each Keras test of the slow layer runs through this server
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc")
def test_keras_jobs_fork_from_a_server_with_tensorflow_loaded_and_the_others_never_load_it(
    jobs_ws: Workspace,
) -> None:
    """Keras jobs (train a network, evaluate it) fork from the fork server of Keras jobs, which loads TensorFlow
    once (the first such job starts it), and learn as in a plain worker; scikit-learn jobs fork from a server that
    never loads it."""
    run = prepared_run(jobs_ws, "breast_cancer")
    keras_server = forkserver.warm_up(jobs_ws.jobs._worker_env(), tensorflow=True)  # as the first Keras job does
    assert keras_server is not None and keras_server is not _server_of(jobs_ws)
    deadline = time.monotonic() + 120
    while not _maps_tensorflow(keras_server._proc.pid):
        assert time.monotonic() < deadline, "the fork server of Keras jobs did not load TensorFlow"
        time.sleep(0.2)

    trained = train(jobs_ws, run, "dnn", config=TrainConfig(epochs=8, batch_size=32), wait_seconds=180)
    assert trained.status == "succeeded", trained.error
    assert trained.result["val_metrics"]["accuracy"] >= 0.9
    warm = evaluate(jobs_ws, run, model_id=trained.result["model_id"], wait_seconds=180)
    assert warm.status == "succeeded", warm.error
    assert warm.result["evaluations"][0]["test_metrics"]["accuracy"] >= 0.9
    for job in (trained, warm):
        assert "TensorFlow preloaded" in _log(jobs_ws, job.job_id)
    assert forkserver.warm_up(jobs_ws.jobs._worker_env(), start=False, tensorflow=True) is keras_server

    sklearn_job = train(jobs_ws, run, "linear", wait_seconds=120)
    assert sklearn_job.status == "succeeded", sklearn_job.error
    assert "TensorFlow not loaded" in _log(jobs_ws, sklearn_job.job_id)
    assert not _maps_tensorflow(_server_of(jobs_ws)._proc.pid)


def test_the_manager_tells_a_keras_job_by_its_spec_without_importing_a_library() -> None:
    """The manager finds a job's spec class among those already imported (the tool that submitted it imported it):
    telling which fork server to ask loads neither the handlers' modules nor NumPy, pandas or TensorFlow."""
    code = (
        "import sys; from ml_expert.tools.jobs.specs import JobSpec; "
        "from ml_expert.tools.packaging.package import PackageSpec; "
        "from ml_expert.tools.training.config import TrainSpec; "
        "assert JobSpec.of_kind('package') is PackageSpec and JobSpec.of_kind('nothing') is None; "
        "assert TrainSpec(run_id='run_00000000', model_id='mdl_00000000', architecture='dnn').runs_keras(None); "
        "assert not TrainSpec(run_id='run_00000000', model_id='mdl_00000000', architecture='rf').runs_keras(None); "
        "print(sorted(m for m in ('numpy', 'pandas', 'sklearn', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_sigint_interrupts_a_forked_worker_like_a_plain_one(jobs_ws: Workspace) -> None:
    """A fresh interpreter turns SIGINT into KeyboardInterrupt, which the worker records as an interruption
    (resumable); a forked worker must not die of the signal instead."""
    run = prepared_run(jobs_ws, "wine")
    status = train(jobs_ws, run, "auto", time_budget_s=120, wait_seconds=0)
    pid = _running_pid(jobs_ws, status.job_id)
    os.kill(pid, signal.SIGINT)
    final = jobs_ws.jobs.wait(status.job_id, 60)
    assert final.status == "interrupted", (final.status, final.error)


def test_a_stop_signal_that_a_library_turned_into_another_error_is_raised_again_at_the_next_check(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, sigint_in_numpy: Callable[[], None]
) -> None:
    """numpy turns a KeyboardInterrupt raised while it parses a buffer's format into a ValueError (HistGradientBoosting
    parses one at every tree), and the search drops a candidate that raised and goes on: a Ctrl-C that landed there was
    lost and the search ran to its end (1 in 3 runs of the test above). The worker's next progress or cancel point
    must raise it again, inside a graceful block too."""
    import numpy as np

    from ml_expert.tools.jobs import worker

    sigint_in_numpy()  # from here on, Ctrl-C lands while numpy parses a buffer format
    monkeypatch.setattr(worker, "_stopped_by", None)
    rows = np.zeros(3, dtype=[("value", "<f8"), ("count", "<u4")])
    previous = signal.signal(signal.SIGINT, worker._stop)
    try:
        with pytest.raises(ValueError, match="PEP 3118"):  # what the search sees: a candidate's library error
            np.asarray(memoryview(rows))
        reporter = worker.JobReporter(ws, "job_00000000")
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            reporter.cancel_requested()
        with reporter.graceful(), pytest.raises(KeyboardInterrupt, match="SIGINT"):
            reporter.progress(message="the next candidate")
    finally:
        signal.signal(signal.SIGINT, previous)


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


def _script_socket(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> forkserver.ForkServer:
    """The workspace's server, with this process set up as one of its workers is (its script socket in the env)."""
    server = _server_of(ws)
    deadline = time.monotonic() + 30
    while server.socket_path is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.socket_path is not None
    monkeypatch.setenv(scripts.SOCKET_ENV, server.socket_path)
    return server


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_script_forked_from_the_server_runs_as_a_fresh_python_c_would(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = _script_socket(jobs_ws, monkeypatch)
    assert server.socket_path is not None
    assert os.stat(os.path.dirname(server.socket_path)).st_mode & 0o777 == 0o700  # only this user can connect
    code = (
        "import json, os, sys, warnings\n"
        "print(json.dumps({'ppid': os.getppid(), 'sid': os.getsid(0), 'pid': os.getpid(), 'cwd': os.getcwd(),\n"
        "    'argv': sys.argv, 'path0': sys.path[0], 'env': dict(os.environ), 'name': __name__,\n"
        "    'first_party': sorted(m for m in sys.modules if m.startswith('ml_expert')),\n"
        "    'ignored': warnings.filters[0][0]}))\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    got = scripts.run_script(code, ["a", "b c"], str(tmp_path), env, lambda: None, 60)
    assert got is not None
    out, err = got
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["ppid"] == server._proc.pid and seen["sid"] == seen["pid"]  # the server's child, in its own session
    assert seen["cwd"] == str(tmp_path) and seen["argv"] == ["-c", "a", "b c"] and seen["path0"] == ""
    assert seen["env"] == env and seen["name"] == "__main__" and seen["ignored"] == "ignore"
    assert seen["first_party"] == []  # none of ml-expert's modules: the package must import what it needs itself
    assert err == "to stderr\n"

    big = scripts.run_script("print('x' * 8_000_000)", [], str(tmp_path), env, lambda: None, 60)
    assert big is not None and big[0] == "x" * 8_000_000 + "\n"  # more than a socket buffer holds: all of it

    failed = scripts.run_script("raise ValueError('broken package')", [], str(tmp_path), env, lambda: None, 60)
    assert failed is not None and failed[0] == "" and "ValueError: broken package" in failed[1]

    # Cancelled while it runs: the script is killed, the exception goes on, and the server serves the next job.
    marker = tmp_path / "pid"
    calls: list[float] = []

    def cancel_once_started() -> None:
        calls.append(time.monotonic())
        if marker.exists():
            raise KeyboardInterrupt

    sleeper = f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    with pytest.raises(KeyboardInterrupt):
        scripts.run_script(sleeper, [], str(tmp_path), env, cancel_once_started, 60)
    pid = int(marker.read_text())
    _until_gone(pid)
    assert len(calls) < 40 and server.alive()
    run = prepared_run(jobs_ws, "breast_cancer")
    assert train(jobs_ws, run, "linear", wait_seconds=120).status == "succeeded"


def _until_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still there")


def test_without_a_fork_server_a_script_is_left_to_a_plain_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(scripts.SOCKET_ENV, raising=False)
    assert scripts.run_script("print(1)", [], str(tmp_path), {}, lambda: None, 10) is None
    monkeypatch.setenv(scripts.SOCKET_ENV, str(tmp_path / "no-such-socket"))  # its server is gone
    assert scripts.run_script("print(1)", [], str(tmp_path), {}, lambda: None, 10) is None


# -- 13. orphans and the queue ------------------------------------------------------------------------------------


class _SleepSpec(JobSpec):
    kind = "sleep"


@pytest.mark.slow
def test_orphan_worker_killed_after_restart_is_noticed_and_counted(ws: Workspace) -> None:
    run = prepared_run(ws, "wine")
    server = (  # a first server process that starts a long job, then dies without stopping its worker
        "import os, time\n"
        "from ml_expert.tools.workspace import Workspace\n"
        "from ml_expert.tools.jobs.manager import JobManager\n"
        "from ml_expert.tools.training.train import train\n"
        f"ws = Workspace({str(ws.root)!r})\n"
        "ws.jobs = JobManager(ws).start()\n"
        f"s = train(ws, {run!r}, 'dnn', config={{'epochs': 400, 'early_stopping_patience': 0}}, wait_seconds=0)\n"
        "while ws.job_store.get(s.job_id).progress.get('phase') != 'train':\n"
        "    time.sleep(0.1)\n"
        "print(s.job_id, flush=True)\n"
        "os._exit(0)\n"
    )
    first = subprocess.run([sys.executable, "-c", server], capture_output=True, text=True, timeout=120)
    job_id = first.stdout.strip().splitlines()[-1]
    manager = JobManager(ws, max_jobs=1).start()  # the restarted server
    ws.jobs = manager
    assert get_job(ws, job_id).status == "running"  # the orphan still trains
    queued = train(ws, run, "linear", wait_seconds=1)
    assert queued.status == "queued"  # the orphan holds the only slot
    manager.kill_worker(job_id)  # now the orphan dies
    deadline = time.monotonic() + 30
    while get_job(ws, job_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get_job(ws, job_id).status == "interrupted"  # noticed on a later tick, not only at start
    assert manager.wait(queued.job_id, 120).status == "succeeded"  # and its slot freed


def test_the_queue_has_a_cap(ws: Workspace) -> None:
    for i in range(MAX_QUEUED):  # a full queue, as the store holds it
        ws.job_store.insert(
            f"job_{i:08x}", kind="train", run_id="run_00000000", namespace="default", spec={}, owner_pid=1
        )
    manager = JobManager(ws)
    with pytest.raises(ConflictError, match=f"limit is {MAX_QUEUED}"):
        manager.submit(_SleepSpec(run_id="run_00000000"))
    assert ws.job_store.count("queued") == MAX_QUEUED


def test_a_worker_whose_exit_code_arrives_after_the_reap_is_failed_by_its_code_not_taken_for_an_orphan(
    ws: Workspace,
) -> None:
    """A forked worker's exit code arrives on the server's reader thread, so it can land between the tick's reap
    and its orphan check; the check must leave that worker to the next reap (CI saw 'interrupted' here once)."""
    ws.job_store.insert("job_0000dead", kind="train", run_id="run_00000000", namespace="default", spec={}, owner_pid=1)
    manager = JobManager(ws)
    assert ws.job_store.claim(1, 1) == ["job_0000dead"]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ws.job_store.set_pid("job_0000dead", worker.pid)
    manager._procs["job_0000dead"] = worker
    worker.kill()
    worker.wait()  # its code is known now, as if it arrived just after _reap ran
    assert manager.mark_orphans_interrupted() == 0
    assert ws.job_store.get("job_0000dead").status == "running"
    manager._tick()  # the next tick reaps it by its code
    row = ws.job_store.get("job_0000dead")
    assert row.status == "failed" and "killed by signal 9" in (row.error or ""), row.error


# -- 15, 16. long probes return the job; every parameter is checked at submit --------------------------------------


def test_a_probe_that_outlasts_the_wait_returns_its_job(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "wine")
    blocker = train(jobs_ws, run, "auto", time_budget_s=300, wait_seconds=0)  # no TensorFlow to import
    result = recommend_architecture(jobs_ws, run, probe_seconds=5, wait_seconds=1)  # queued behind the blocker
    assert result.status in ("queued", "running") and result.job_id
    jobs_ws.jobs.cancel(blocker.job_id)
    done = jobs_ws.jobs.wait(result.job_id, 180)
    assert done.status == "succeeded" and done.result["probed"] is True


def test_workflow_parameters_are_checked_at_submit(jobs_ws: Workspace) -> None:
    write_dataset(jobs_ws, "wine")
    with pytest.raises(InvalidInputError, match="control characters"):
        run_workflow(jobs_ws, path="wine.csv", target="target", namespace="bad\nns")
    with pytest.raises(NotFoundError):
        run_workflow(jobs_ws, path="missing.csv", target="target")
    assert jobs_ws.runs.list(10)[1] == 0 and jobs_ws.job_store.list(status=None, limit=10)[1] == 0
