"""Settings: parsed once by the CLI from flags and environment, then passed explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, fixed at start."""

    workspace: Path
    allow_paths: tuple[Path, ...] = ()
    max_jobs: int = 1
    wait_seconds: float = 45.0
    max_value_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults <- environment (ML_EXPERT_*) <- explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "workspace": Path(env.get("ML_EXPERT_WORKSPACE") or "."),
            "allow_paths": tuple(Path(p) for p in env.get("ML_EXPERT_ALLOW_PATHS", "").split(os.pathsep) if p),
            "max_jobs": int(env.get("ML_EXPERT_MAX_JOBS") or 1),
            "wait_seconds": float(env.get("ML_EXPERT_WAIT_SECONDS") or 45.0),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["workspace"] = Path(values["workspace"]).expanduser().resolve()  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def limit_native_threads(threads: int | None = None) -> int:
    """Cap OpenMP/BLAS/TensorFlow pools for this process and its children (unless the user set them).

    On 2 cores an unlimited OpenMP pool made a 0.15 s HistGradientBoosting fit take 6–65 s under load.
    """
    n = threads or max(1, (os.cpu_count() or 1))
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return n
