"""`python -c CODE ARGS` stand-ins forked from a warm fork server (`forkserver`), for what must run as a new
process would but need not pay its start-up: the package job's verifier (~2.5 s of imports, ~8 s with TensorFlow).

The server listens on a Unix socket in a folder only this user can enter, and tells each worker it forks where
(`ML_EXPERT_FORKSERVER_SOCKET`). A worker sends one JSON line `{"code", "argv", "cwd", "env", "stderr"}`; the
server forks a child that takes the request's cwd, env (exactly), stdio and a session of its own, drops the package
modules `-m` imported to reach the server, and runs the code as `__main__`. Its first line on the connection is
`{"pid"}` (or the server's `{"error"}`), then the script's stdout, until it ends. Its exit is not a job's and is not
reported to the manager. Standard library only: the server imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SOCKET_ENV = "ML_EXPERT_FORKSERVER_SOCKET"  # in a forked worker: its server's socket for `run_script`
SCRIPT_REQUEST_TIMEOUT_S = 5.0  # connecting and sending a script request; the server reads it at once


def become_fresh(inherited: tuple[int, ...], stdout: int, stderr: int, cwd: str, env: Mapping[str, str]) -> None:
    """In a forked child: close the server's own descriptors, and take on what a process freshly started with these
    stdout, stderr, working directory and environment would have (its own session, signal handlers, numpy's seed)."""
    for fd in inherited:  # the manager's reader sees the server's end of file, not the children's
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # nothing the server buffered reaches the child's outputs
        with contextlib.suppress(Exception):
            stream.flush()
    os.setsid()
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS; so does this one
        sys.modules["numpy"].random.seed()


def exit_code(exc: SystemExit) -> int:
    """The code an interpreter exits with on this SystemExit (a message is printed, and exits 1)."""
    if isinstance(exc.code, int) or exc.code is None:
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def _script_child(request: dict[str, Any], conn: socket.socket, inherited: tuple[int, ...]) -> None:
    """In the forked child: run the request's code as `python -c CODE *argv` started in its cwd with its env would,
    stdout on the connection (after a first line with this pid), stderr to the request's file."""
    code = 1
    try:
        conn.sendall((json.dumps({"pid": os.getpid()}) + "\n").encode())
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        become_fresh(inherited, conn.fileno(), err, request["cwd"], request["env"])
        os.close(err)
        conn.close()  # fd 1 holds the connection now
        sys.path[0] = ""  # `python -c` looks in the working directory first
        sys.argv = ["-c", *request["argv"]]
        import warnings

        for option in filter(None, request["env"].get("PYTHONWARNINGS", "").split(",")):  # as -W options are read
            with contextlib.suppress(Exception):
                warnings._setoption(option)  # type: ignore[attr-defined]
        if request["env"].get("OMP_NUM_THREADS", "").isdigit():  # the native pools were sized by the server's env
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(request["env"]["OMP_NUM_THREADS"]))
            os.environ.clear()  # threadpoolctl's import sets a variable of its own: the script sees exactly its env
            os.environ.update(request["env"])
        for name in [m for m in sys.modules if m == "ml_expert" or m.startswith("ml_expert.")]:
            del sys.modules[name]  # the packages `-m` imported to reach this module: none of ours in a fresh process
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
        code = 0
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve_script(listener: socket.socket, inherited: tuple[int, ...], scripts: set[int]) -> None:
    """One `run_script` connection: read its request and fork its script (an error line instead where it cannot).
    `inherited`: the server's descriptors (the listener's among them), closed in the child."""
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        try:
            conn.settimeout(SCRIPT_REQUEST_TIMEOUT_S)  # the client sends its request at once
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(1 << 16)
                if not chunk:
                    raise ValueError("the connection closed before its request ended")
                data += chunk
            request = json.loads(data)
            if not isinstance(request, dict) or not all(k in request for k in ("code", "argv", "cwd", "env", "stderr")):
                raise ValueError("a script request needs code, argv, cwd, env and stderr")
            conn.setblocking(True)  # a timeout left the descriptor non-blocking: the script's stdout would lose output
            pid = os.fork()
        except (OSError, ValueError, TypeError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall((json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
            return
        if pid == 0:
            _script_child(request, conn, inherited)
        scripts.add(pid)


def run_script(
    code: str,
    argv: list[str],
    cwd: str,
    env: Mapping[str, str],
    checkpoint: Callable[[], None],
    timeout: float,
) -> tuple[str, str] | None:
    """Run `python -c code *argv` (in `cwd`, with exactly `env`) as a child forked from this worker's fork server,
    whose imports are third-party libraries only: a fresh process but for its start-up (~2.5 s for pandas and
    scikit-learn, ~8 s for TensorFlow). Returns its (stdout, stderr) once it ends, or None where no server can run
    it (this process was not forked from one, or the server refused): start a plain process then. `checkpoint` is
    called about twice a second while it runs; when it raises (a cancelled job) or `timeout` passes, the child is
    killed and the exception goes on."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not sys.platform.startswith("linux"):
        return None
    with tempfile.NamedTemporaryFile(prefix="ml-expert-script-", suffix=".stderr") as err:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with conn:
            try:
                conn.settimeout(SCRIPT_REQUEST_TIMEOUT_S)
                conn.connect(path)
                request = {"code": code, "argv": argv, "cwd": cwd, "env": dict(env), "stderr": err.name}
                conn.sendall(json.dumps(request).encode() + b"\n")
            except OSError:
                return None
            out, pid, deadline = b"", None, time.monotonic() + timeout
            try:
                while True:
                    ready, _, _ = select.select([conn], [], [], 0.5)
                    if not ready:
                        if time.monotonic() >= deadline:
                            raise subprocess.TimeoutExpired(["python", "-c", "...", *argv], timeout)
                        checkpoint()
                        continue
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    out += chunk
                    if pid is None and b"\n" in out:
                        first, out = out.split(b"\n", 1)
                        pid = json.loads(first).get("pid")
                        if not isinstance(pid, int):  # the server could not fork it
                            return None
            except BaseException:
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.killpg(pid, signal.SIGKILL)  # its own session: the script and anything it started
                raise
        if pid is None:
            return None
        return out.decode(errors="replace"), Path(err.name).read_text(errors="replace")


def listen() -> tuple[socket.socket, str]:
    """The server's script socket, in a folder only this user can enter."""
    folder = tempfile.mkdtemp(prefix="ml-expert-forkserver-")
    path = os.path.join(folder, "scripts")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    return listener, path


def unlisten(listener: socket.socket, path: str) -> None:
    """Close the script socket and remove its folder (the server is ending)."""
    listener.close()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
