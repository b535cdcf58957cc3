"""Proving a package works: load it in a fresh Python process, from an empty working directory,
with raw test rows, once per runtime, and compare with the in-process model; plus the compiled
single-row preprocessing (`fast_preprocess.json`), kept only when it reproduces the fitted one.
In a job's worker that a warm fork server started, that process is forked from the server, which has
imported third-party libraries only (`scripts.run_script`): the same process but for the ~2.5 s
(~8 s with TensorFlow) of start-up that a new interpreter spends on every package.
Single-row latency (p50/p95) is timed over 200 calls, or over at least 20 within about 0.5 s where a runtime is
slow (a Keras `model.keras` row takes ~70 ms: 200 calls were 15 s of every Keras package; a random forest on raw rows
~38 ms, where 0.5 s of warm-up and a 1 s window were 1.5 of a package job's 7.5 s).
Batch throughput is timed on 10,000 raw rows (2,000 arrays), or on a tenth of them where that tenth took 0.2 s or more:
on a 752-column table, 10,000 rows were 5.2 s (joblib) and 2.7 s (ONNX) of a 17 s package job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.portable.fast import FastPreprocessor
from ml_expert.tools.core.portable.preprocessing import coerce_frame
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.packaging.export import FormatReport, tolerance

VERIFY_TIMEOUT = 600
POLL_SECONDS = 0.5
FAST_PATH_CELLS = 300_000  # raw test cells the compiled preprocessing is checked on

VERIFY_SCRIPT = """
import json, os, sys, time, traceback
import numpy as np, pandas as pd
pkg, raw, runtimes = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, pkg)
from inference import ModelInference
if raw.endswith(".npz"):
    raw = np.load(raw, allow_pickle=False)["X"]
    records = [raw[i : i + 1] for i in range(len(raw))]
    big = np.concatenate([raw] * (2000 // len(raw) + 1))[:2000]
else:
    records = pd.read_csv(raw, dtype=str).to_dict("records")
    big = pd.read_csv(raw, dtype=str)
    big = pd.concat([big] * (10000 // len(big) + 1), ignore_index=True).head(10000)
results = {}
for runtime in runtimes:
    try:
        t0 = time.perf_counter()
        model = ModelInference(pkg, runtime=runtime)
        load_s = time.perf_counter() - t0
        out = model.predict_output(raw)
        labels = model.labels(out)  # what model.predict(raw) returns, without a second pass over the rows
        warm_until = time.perf_counter() + 0.25  # up to 10 warm-up calls, at most about a quarter of a second
        for _ in range(10):
            model.predict(records[0])
            if time.perf_counter() > warm_until:
                break
        times, until = [], time.perf_counter() + 0.5  # 200 timed calls, or at least 20 within about 0.5 s
        for i in range(200):
            t = time.perf_counter(); model.predict(records[i % len(records)]); times.append(time.perf_counter() - t)
            if len(times) >= 20 and t > until:
                break
        rows = len(big) // 10  # a tenth first: where it takes 0.2 s or more, its rate is the answer
        t = time.perf_counter(); model.predict(big[:rows]); batch_s = time.perf_counter() - t
        if batch_s < 0.2:
            rows, t = len(big), time.perf_counter(); model.predict(big); batch_s = time.perf_counter() - t
        results[runtime] = {"output": np.asarray(out).tolist(), "labels": [str(v) for v in labels],
                            "load_seconds": load_s, "p50_ms": float(np.percentile(times, 50) * 1000),
                            "p95_ms": float(np.percentile(times, 95) * 1000), "batch_rows_per_s": rows / batch_s}
    except Exception as exc:
        results[runtime] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(results))
sys.stdout.flush()
os._exit(0)  # skip the interpreter's teardown of the loaded libraries (~0.7 s): the answer is written
"""


VERIFY_ENV = {
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PATH": "/usr/bin:/bin",
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


def run_in_fresh_process(
    folder: Path, runtimes: list[str], raw: Path, checkpoint: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Load the package in one fresh Python process, from an empty working directory, once per runtime.

    In a job forked from a warm fork server, the process is forked from that server (`scripts.run_script`): it
    has imported only third-party libraries, so it is fresh in all but its start-up, which it skips (~2.5 s; ~8 s
    with TensorFlow). Elsewhere, or where that process gives no results, it is a new interpreter. Each runtime's
    result names which (`process`).
    `checkpoint` is called about twice a second while the process runs (the job's cancel point): when it raises,
    the process is killed and the exception goes on."""
    from ml_expert.tools.jobs.scripts import run_script

    args = [str(folder), str(raw), *runtimes]
    with tempfile.TemporaryDirectory(prefix="ml-expert-verify-") as empty:
        forked = run_script(VERIFY_SCRIPT, args, empty, VERIFY_ENV, checkpoint, VERIFY_TIMEOUT)
        results = _results(None, *forked) if forked else None
        process = "forked from the warm job server"
        if not isinstance(results, dict):  # not forked, or it failed: a new interpreter has the last word
            code, stdout, stderr = _run_plain(args, empty, checkpoint)
            results, process = _results(code, stdout, stderr), "a new Python process"
    if isinstance(results, str):
        return {r: {"error": f"the verifier process failed: {results}"} for r in runtimes}
    return {r: {**got, "process": process} for r, got in results.items()}


def _results(code: int | None, stdout: str, stderr: str) -> dict[str, Any] | str:
    """The verifier's results (its last line of output), or why there are none."""
    lines = stdout.strip().splitlines()
    try:
        results = json.loads(lines[-1]) if code in (0, None) and lines else None
    except ValueError:
        results = None
    if isinstance(results, dict):
        return results
    return stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}, no results"


def _run_plain(args: list[str], cwd: str, checkpoint: Callable[[], None]) -> tuple[int, str, str]:
    """The verifier as a new interpreter: (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", VERIFY_SCRIPT, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=VERIFY_ENV,
    )
    deadline = time.monotonic() + VERIFY_TIMEOUT
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=POLL_SECONDS)
                return proc.returncode, stdout, stderr
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(proc.args, VERIFY_TIMEOUT) from None
                checkpoint()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def compare(task: str, reference: np.ndarray, got: np.ndarray, scale: float) -> tuple[float | None, float]:
    """(label agreement or None for regression, max |Δ| scaled by the target's spread)."""
    if is_classification(task):
        return float(np.mean(reference.argmax(1) == got.argmax(1))), float(np.max(np.abs(reference - got)))
    return None, float(np.max(np.abs(reference - got)) / scale)


def verify_reports(
    build: Path,
    reports: list[FormatReport],
    meta: ModelMeta,
    reference: np.ndarray,
    raw: Path,
    scale: float,
    checkpoint: Callable[[], None] = lambda: None,
) -> None:
    """Verify every shipped format in a fresh process; a format that fails loses `shipped` and says why."""
    to_verify = [r for r in reports if r.shipped]
    runtimes = [r.runtime or "" for r in to_verify]
    verified = run_in_fresh_process(build, runtimes, raw, checkpoint) if to_verify else {}
    for rep in to_verify:
        tol, agreement, text = tolerance(meta, rep.runtime or "")
        rep.tolerance = text
        target = build / (rep.file or "")
        rep.size_bytes = sum(p.stat().st_size for p in target.rglob("*")) if target.is_dir() else target.stat().st_size
        got = verified.get(rep.runtime or "", {"error": "not verified"})
        if "error" in got:
            rep.shipped, rep.error = False, f"verification failed: {got['error']}"[:500]
            continue
        rep.label_agreement, rep.max_abs_diff = compare(meta.task_type, reference, np.asarray(got["output"]), scale)
        rep.p50_ms, rep.p95_ms = round(got["p50_ms"], 4), round(got["p95_ms"], 4)
        rep.batch_rows_per_s = round(got["batch_rows_per_s"], 1)
        rep.verified_in = got.get("process")
        if rep.max_abs_diff > tol or (rep.label_agreement is not None and rep.label_agreement < agreement):
            rep.shipped = False
            rep.error = f"parity failed: agreement {rep.label_agreement}, max |Δ| {rep.max_abs_diff:.3g} ({text})"


def compile_fast_path(build: Path, raw_csv: Path, pre: Any) -> bool:
    """Write fast_preprocess.json when the compiled preprocessing reproduces the fitted one on the test rows (the
    first `FAST_PATH_CELLS` cells' worth of them, at least 200 rows: 656 rows of 1,467 columns took 8.5 s)."""
    schema = json.loads((build / "schema.json").read_text())
    spec = FastPreprocessor.compile(pre, schema)
    if spec is None:
        return False
    raw = pd.read_csv(raw_csv, dtype=str)
    raw = raw.head(max(200, FAST_PATH_CELLS // max(1, raw.shape[1])))
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in raw.to_dict("records")]
    fast = FastPreprocessor(json.loads(json.dumps(spec))["blocks"], schema).transform_records(records)
    slow = np.asarray(pre.transform(coerce_frame(raw, schema)), dtype=np.float32)
    if fast.shape != slow.shape or not np.allclose(fast, slow, rtol=1e-5, atol=1e-5, equal_nan=True):
        return False
    (build / "fast_preprocess.json").write_text(json.dumps(spec))
    return True
