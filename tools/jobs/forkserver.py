"""A warm fork server for worker processes: jobs start in milliseconds instead of ~2 s of imports.

A plain worker (`python -m ml_expert.tools.jobs.worker JOB_ID`) spends about two seconds importing
pandas, SciPy and scikit-learn before it reaches its job; a `predict` or `evaluate` on a small
table then takes 2.5 s where the work is 0.2 s. The job manager instead asks a long-lived process
(`python -m ml_expert.tools.jobs.forkserver`) that has imported those libraries — and nothing that
opens the workspace or runs a parallel region — to fork a child per job. The child is a worker like the
plain one: its own session (setsid), its log on fds 1 and 2, the manager's environment and working
directory, and `worker.main` as its body; the server reports its pid and, later, its exit code.

Protocol (one JSON object per line): the manager writes `{"id", "job_id", "log", "cwd", "env"}` on
the server's stdin; the server answers `{"id", "pid"}` (or `{"id", "error"}`) and, when a child
ends, `{"exit": pid, "code": returncode}` (negative: killed by that signal, as `Popen`). The server
imports its preload list one module at a time between requests, so a request never waits for more
than one import; it exits when its stdin closes (its manager is gone), leaving running children
alone. A request carries an expiry: the server refuses it once expired, and a manager that has no answer
by then (and a grace period) stops the server, so a job never gets a late second worker. Where no server
can serve, the manager falls back to a plain worker process. A one-shot CLI command (a manager without a
scheduler thread) uses a warm server but starts none: its single job would only compete with the imports.

The first-party code is imported in each child, never in the server (which imports only its own module and
`scripts`, standard library both): an edited module is picked up by the next job.

Scripts: a worker can also ask its server for a `python -c CODE ARGS` stand-in on the server's socket
(`scripts.run_script`; the package job's verifier, which must load the package as a new process would).

Jobs that run a Keras model (train a network; evaluate, package, predict or explain one) fork from a second
server, started at the first such job, that also imports TensorFlow and Keras (about 7 s on a 2-core machine,
paid once instead of by every such job). TensorFlow's import starts a few idle native threads; its runtime
(thread pools, devices) starts on first use, in the child. Servers without TensorFlow never import it, so
the memory it takes is spent only where networks are used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ml_expert.tools.jobs.scripts import SOCKET_ENV, become_fresh, exit_code, listen, serve_script, unlisten

# Third-party modules nearly every job imports (about 2 s together on a 2-core machine). Nothing here
# starts threads at import or touches the workspace; TensorFlow is loaded by the Keras jobs' server only.
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
    "matplotlib.pyplot",  # ~0.7 s of every job that draws a figure; the backend is chosen in the job (Agg)
    "catboost",
    "skl2onnx",  # ~1.4 s of every package job (it loads onnx and ml_dtypes)
)
TENSORFLOW_PRELOAD = ("tensorflow", "keras")  # also loaded by the server of jobs that run Keras models
TENSORFLOW_FLAG = "--tensorflow"
IMPORT_TIME_VARS = (  # besides the thread variables: read by Python or a preloaded library when it starts
    "PYTHONWARNINGS", "PYTHONPATH", "PYTHONHASHSEED", "OMP_PROC_BIND", "OMP_WAIT_POLICY", "OMP_DYNAMIC",
    "MKL_THREADING_LAYER", "MPLBACKEND", "MPLCONFIGDIR", "LC_ALL", "LANG", "TF_CPP_MIN_LOG_LEVEL",
    "TF_ENABLE_ONEDNN_OPTS", "TF_USE_LEGACY_KERAS", "KERAS_BACKEND", "KERAS_HOME", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip
DISABLE_ENV = "ML_EXPERT_FORKSERVER"  # "0": start every worker as a plain process
START_TIMEOUT_S = 10.0  # a request the server has not served by then is refused (the job starts plain)
REPLY_GRACE_S = 5.0  # ... and a server silent this much longer is stopped


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
        if self.returncode is None and self._server.gone():  # its exit can no longer be reported
            from ml_expert.tools.jobs.manager import pid_alive

            if not pid_alive(self.pid):
                self._ended_with(0)  # unknown: the job row says how it ended (or the orphan check does)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
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


class ForkServer:
    """The manager's side: one server process per thread configuration (and with or without TensorFlow), shared by
    every manager in it."""

    def __init__(self, env: Mapping[str, str], tensorflow: bool = False) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, *([TENSORFLOW_FLAG] if tensorflow else [])],
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
        self._eof = threading.Event()  # the reader has read the server's last message
        self.socket_path: str | None = None  # its script socket, once it has said where (`run_script`)
        threading.Thread(target=self._read, name="ml-expert-forkserver", daemon=True).start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def gone(self) -> bool:
        """The server has exited and every message it sent has been read: no exit code can still arrive."""
        return self._eof.is_set()

    def _read(self) -> None:
        try:
            self._read_messages()
        finally:
            if self.socket_path:  # a server that was killed could not remove its socket's folder itself
                shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)
            self._eof.set()
            with self._reply:  # the server is gone: wake every waiter
                self._reply.notify_all()

    def _read_messages(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("socket"), str):
                self.socket_path = msg["socket"]
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("exit", msg.get("id")), int):
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

    def start(self, job_id: str, log: str, env: Mapping[str, str]) -> ForkedWorker:
        """Fork a worker for job_id; OSError when the server cannot (the caller starts a plain one)."""
        with self._lock:
            self._next += 1
            rid = self._next
            expires = time.time() + START_TIMEOUT_S  # the server refuses the request after this: no late fork
            request = {
                "id": rid,
                "job_id": job_id,
                "log": log,
                "cwd": os.getcwd(),
                "env": dict(env),
                "expires": expires,
            }
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise OSError(f"the fork server is gone: {exc}") from exc
        deadline = time.monotonic() + START_TIMEOUT_S + REPLY_GRACE_S
        with self._reply:
            while rid not in self._replies:
                if self.gone():
                    raise OSError("the fork server exited")
                left = deadline - time.monotonic()
                if left <= 0:  # hung past the request's expiry: it must never fork this job late
                    self._proc.kill()
                    raise OSError("the fork server did not answer; it was stopped")
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


def _key(env: Mapping[str, str], tensorflow: bool) -> tuple[str, ...]:
    """What a worker's environment fixes at import time (native thread pools, paths, warnings, locale), and whether
    the server loads TensorFlow: workers whose keys differ never share a server, so each gets what a plain process
    started with its env would."""
    from ml_expert.tools.settings import THREAD_VARS  # here, not at the top: not in the server

    names = (*THREAD_VARS, *IMPORT_TIME_VARS)
    return (sys.executable, TENSORFLOW_FLAG if tensorflow else "", *(env.get(var, "") for var in names))


def warm_up(env: Mapping[str, str], *, start: bool = True, tensorflow: bool = False) -> ForkServer | None:
    """The fork server for workers started with `env` (started now, unless `start` is False, if there is none
    alive), the one that also loads TensorFlow with `tensorflow`; None where fork servers are off or cannot
    start."""
    if os.environ.get(DISABLE_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return None  # elsewhere forking after numpy's BLAS is not safe (macOS), or there is no fork
    key = _key(env, tensorflow)
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.alive():
            return server
        if not start:
            return None
        try:
            server = _servers[key] = ForkServer(env, tensorflow)
        except OSError:
            return None
        return server


def start_worker(
    job_id: str, log: str, env: Mapping[str, str], *, start_server: bool = True, tensorflow: bool = False
) -> ForkedWorker | None:
    """A forked worker for the job, or None when no fork server can serve (start a plain process then). Without
    `start_server` only a server already warm serves: a one-shot command does not start one, whose imports would
    only compete with its single job's for the cores. A job that runs a Keras model (`tensorflow`) forks from the
    server that loads TensorFlow; the first such job starts it and forks before that import is done (it imports
    TensorFlow itself, as a plain worker would), the next ones find it loaded."""
    server = warm_up(env, start=start_server, tensorflow=tensorflow)
    if server is None:
        return None
    try:
        return server.start(job_id, log, env)
    except OSError:
        return None


# -- the server process ------------------------------------------------------------------------------


def _child(request: dict[str, Any], inherited: tuple[int, ...]) -> None:
    """In the forked child: become a worker process for the request's job (as `python -m ...worker JOB_ID` started
    with the request's env and cwd would be), then exit with its code."""
    code, interrupted = 1, False
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        become_fresh(inherited, fd, fd, request["cwd"], request["env"])
        os.close(fd)
        sys.path[0] = request["cwd"]  # where `python -m` started in this folder looks first
        sys.argv = ["ml_expert.tools.jobs.worker", request["job_id"]]
        from ml_expert.tools.jobs.worker import main

        code = main([request["job_id"]])
    except SystemExit as exc:
        code = exit_code(exc)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            threading._shutdown()  # type: ignore[attr-defined]  # as at interpreter exit: non-daemon threads
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            if interrupted:  # Python ends on an uncaught KeyboardInterrupt by SIGINT: exit code -2, as Popen says
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            os._exit(code)


def _serve_line(line: bytes, send: Any, inherited: tuple[int, ...], socket_path: str) -> None:
    """One request: fork its worker unless it expired or is malformed (then an error reply, where it has an id)."""
    try:
        request = json.loads(line)
        rid = request["id"]
        if not isinstance(request, dict) or not all(k in request for k in ("job_id", "log", "cwd", "env")):
            raise ValueError("a request needs job_id, log, cwd and env")
    except (ValueError, TypeError, KeyError) as exc:
        with contextlib.suppress(Exception):
            send({"id": int(json.loads(line)["id"]), "error": f"bad request: {exc}"})
        return
    if time.time() > float(request.get("expires", math.inf)):
        send({"id": rid, "error": "the request expired before the server could fork"})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        send({"id": rid, "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        _child({**request, "env": {**request["env"], SOCKET_ENV: socket_path}}, inherited)
    send({"id": rid, "pid": pid})


def serve(preload: tuple[str, ...] = PRELOAD) -> None:
    """The server's loop: preload between requests, fork on request (jobs on stdin, scripts on its socket), report
    jobs' exits; end when stdin closes. Messages go out on a private copy of fd 1, and fd 1 itself to /dev/null:
    what a preloaded library prints cannot corrupt them."""
    import importlib

    proto = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    out = os.fdopen(proto, "w", closefd=False)

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    listener, socket_path = listen()
    send({"socket": socket_path})
    inherited = (proto, listener.fileno())
    scripts: set[int] = set()  # their exits are no job's: not reported
    pending, buffer, open_ = list(preload), b"", True
    try:
        while open_:
            ready, _, _ = select.select([0, listener], [], [], 0 if pending else 0.2)
            if listener in ready:
                serve_script(listener, inherited, scripts)
            if 0 in ready:
                chunk = os.read(0, 1 << 16)
                open_ = bool(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    _serve_line(line, send, inherited, socket_path)
            elif not ready and pending:
                with contextlib.suppress(Exception):  # an optional library missing: its jobs import what they need
                    importlib.import_module(pending.pop(0))
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in scripts:
                    scripts.discard(pid)
                else:
                    send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
    finally:
        unlisten(listener, socket_path)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(PRELOAD + (TENSORFLOW_PRELOAD if TENSORFLOW_FLAG in sys.argv[1:] else ()))
