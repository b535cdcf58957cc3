"""A warm fork server for worker processes: jobs start in milliseconds instead of ~2 s of imports.

A plain worker (`python -m ml_expert.tools.jobs.worker JOB_ID`) spends about two seconds importing
pandas, SciPy and scikit-learn before it reaches its job; a `predict` or `evaluate` on a small
table then takes 2.5 s where the work is 0.2 s. The job manager instead asks a long-lived process
(`python -m ml_expert.tools.jobs.forkserver`) that has imported those libraries — and nothing that
starts threads or opens the workspace — to fork a child per job. The child is a worker like the
plain one: its own session (setsid), its log on fds 1 and 2, the manager's environment and working
directory, and `worker.main` as its body; the server reports its pid and, later, its exit code.

Protocol (one JSON object per line): the manager writes `{"id", "job_id", "log", "cwd", "env"}` on
the server's stdin; the server answers `{"id", "pid"}` (or `{"id", "error"}`) and, when a child
ends, `{"exit": pid, "code": returncode}` (negative: killed by that signal, as `Popen`). The server
imports its preload list one module at a time between requests, so a request never waits for more
than one import; it exits when its stdin closes (its manager is gone), leaving running children
alone. Where it cannot start or dies, the manager falls back to a plain worker process.

The first-party code is imported in each child, never in the server: an edited module is picked up
by the next job.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ml_expert.tools.settings import THREAD_VARS

# Third-party modules nearly every job imports (about 2 s together on a 2-core machine). Nothing here
# starts threads at import or touches the workspace; TensorFlow is left to the jobs that train networks.
PRELOAD = (
    "numpy",
    "pandas",
    "scipy.stats",
    "sklearn.base",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.inspection",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "joblib",
    "sqlite_utils",
    "matplotlib",
    "catboost",
)
DISABLE_ENV = "ML_EXPERT_FORKSERVER"  # "0": start every worker as a plain process
START_TIMEOUT_S = 10.0


class ForkedWorker:
    """A worker forked by the server, with the part of `subprocess.Popen` the job manager uses."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server
        self._ended = threading.Event()

    def _ended_with(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        if self.returncode is None and not self._server.alive():  # its exit can no longer be reported
            from ml_expert.tools.jobs.manager import pid_alive

            if not pid_alive(self.pid):
                self._ended_with(0)  # unknown: the job row says how it ended (or the orphan check does)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else _now() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - _now()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            self._ended.wait(0.2 if left is None else min(0.2, left))
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _now() -> float:
    return time.monotonic()


class ForkServer:
    """The manager's side: one server process per thread configuration, shared by every manager in it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,  # a Ctrl-C at the terminal is the CLI's to handle, not the server's
        )
        self._lock = threading.Lock()
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._reply = threading.Condition()
        self._children: dict[int, ForkedWorker] = {}
        self._early_exits: dict[int, int] = {}
        threading.Thread(target=self._read, name="ml-expert-forkserver", daemon=True).start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "exit" in msg:
                with self._reply:
                    child = self._children.pop(msg["exit"], None)
                    if child is None:  # ended before its fork reply was handled
                        self._early_exits[msg["exit"]] = msg["code"]
                if child is not None:
                    child._ended_with(msg["code"])
            else:
                with self._reply:
                    self._replies[msg["id"]] = msg
                    self._reply.notify_all()
        with self._reply:  # the server is gone: wake every waiter
            self._reply.notify_all()

    def start(self, job_id: str, log: str, env: Mapping[str, str]) -> ForkedWorker:
        """Fork a worker for job_id; OSError when the server cannot (the caller starts a plain one)."""
        with self._lock:
            self._next += 1
            rid = self._next
            request = {"id": rid, "job_id": job_id, "log": log, "cwd": os.getcwd(), "env": dict(env)}
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise OSError(f"the fork server is gone: {exc}") from exc
        deadline = _now() + START_TIMEOUT_S
        with self._reply:
            while rid not in self._replies:
                left = deadline - _now()
                if left <= 0 or not self.alive():
                    raise OSError("the fork server did not answer")
                self._reply.wait(min(left, 0.5))
            reply = self._replies.pop(rid)
            if "pid" not in reply:
                raise OSError(reply.get("error", "the fork server could not fork"))
            child = ForkedWorker(int(reply["pid"]), self)
            code = self._early_exits.pop(child.pid, None)
            if code is None:
                self._children[child.pid] = child
        if code is not None:
            child._ended_with(code)
        return child


_servers: dict[tuple[str, ...], ForkServer] = {}
_servers_lock = threading.Lock()


def warm_up(env: Mapping[str, str]) -> ForkServer | None:
    """The fork server for workers started with `env` (started now if there is none), or None where
    fork servers are off or cannot start.

    Servers are keyed by what fixes native thread pools at import (the thread variables), so a worker
    gets exactly the pools a plain process started with `env` would."""
    if os.environ.get(DISABLE_ENV, "1") == "0" or not hasattr(os, "fork"):
        return None
    key = (sys.executable, *(env.get(var, "") for var in (*THREAD_VARS, "PYTHONWARNINGS")))
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            try:
                server = _servers[key] = ForkServer(env)
            except OSError:
                return None
        return server


def start_worker(job_id: str, log: str, env: Mapping[str, str]) -> ForkedWorker | None:
    """A forked worker for the job, or None when no fork server can serve (start a plain process then)."""
    server = warm_up(env)
    if server is None:
        return None
    try:
        return server.start(job_id, log, env)
    except OSError:
        return None


# -- the server process ------------------------------------------------------------------------------


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become a worker process for the request's job, then exit with its code."""
    code = 1
    try:
        os.setsid()
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["ml_expert.tools.jobs.worker", request["job_id"]]
        from ml_expert.tools.jobs.worker import main

        code = main([request["job_id"]])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The server's loop: preload between requests, fork on request, report exits; end when stdin closes."""
    import importlib

    out = sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    pending, buffer, open_ = list(PRELOAD), b"", True
    while open_:
        ready, _, _ = select.select([0], [], [], 0 if pending else 0.2)
        if ready:
            chunk = os.read(0, 1 << 16)
            open_ = bool(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as exc:
                    send({"id": request["id"], "error": f"fork failed: {exc}"})
                    continue
                if pid == 0:
                    _child(request)
                send({"id": request["id"], "pid": pid})
        elif pending:
            with contextlib.suppress(Exception):  # an optional library missing: its jobs import what they need
                importlib.import_module(pending.pop(0))
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve()
