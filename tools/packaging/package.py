"""Phase 5 — `package`: check the request and submit the build of a verified deployment folder.

`package_spec` validates the call (model exists, formats fit its framework, the output folder is
safe to write) and builds the `PackageSpec`; the worker (`packaging.build.run_package_job`) builds
and verifies the folder. Stores `ml-expert/deployment`.

The output folder rule protects the user's files: a package is written to the run's own
`deployment/` by default, or to a folder inside the workspace that is missing, empty, or an
earlier package this server wrote (it has ml-expert's `manifest.json`). The workspace root,
anything under `.ml-expert/`, an existing file and any other existing folder are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, PathNotAllowedError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import load_model_meta, load_prepared
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobSpec, JobStatus, ProgressFn, WaitSeconds
from ml_expert.tools.packaging.export import KERAS_FORMATS, SKLEARN_FORMATS, Format, FormatReport, default_formats
from ml_expert.tools.workspace import Workspace

MANIFEST_KEYS = {"run_id", "model_id", "runtimes", "files"}


class PackageSpec(JobSpec):
    kind = "package"
    model_id: str
    formats: list[str] = Field(min_length=1)
    output_dir: str | None = Field(None, description="Checked folder relative to the workspace; None = run default.")


class PackageResult(BaseModel):
    run_id: str
    model_id: str
    folder: str
    formats: list[FormatReport]
    default_runtime: str | None = Field(description="Fastest verified runtime; inference.py uses it by default.")
    verified: bool = Field(description="True when at least one format passed verification.")
    test_metric: dict[str, float]
    files: list[str]
    usage: str
    next_step: str


def is_package_folder(folder: Path) -> bool:
    """True when the folder holds a manifest.json of the shape ml-expert writes."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and set(manifest) >= MANIFEST_KEYS


def check_output_dir(ws: Workspace, output_dir: str) -> Path:
    """The resolved output folder, or a clear refusal when writing there could lose a user's file."""
    final = ws.resolve_path(output_dir, must_exist=False, kind="output_dir")
    if final == ws.root or ws.root not in final.parents:
        raise PathNotAllowedError(
            f"output_dir {output_dir!r} must be a sub-folder of the workspace {ws.root}, not the workspace itself or "
            "a folder outside it. Pass e.g. output_dir='deploy/model-v1'."
        )
    if final == ws.home or ws.home in final.parents:
        raise PathNotAllowedError(
            f"output_dir {output_dir!r} is inside ml-expert's state folder {ws.home}. Omit output_dir (the package "
            "goes to the run's deployment/ folder) or pass a folder outside .ml-expert/."
        )
    if final.exists() and not final.is_dir():
        raise InvalidInputError(
            f"output_dir {output_dir!r} is an existing file; a package never replaces a file. Pass a new folder name."
        )
    if final.is_dir() and any(final.iterdir()) and not is_package_folder(final):
        raise InvalidInputError(
            f"output_dir {output_dir!r} is an existing folder that is not an ml-expert package (no manifest.json); "
            "a package only replaces an earlier package. Pass a new or empty folder."
        )
    return final


def package_spec(
    ws: Workspace,
    run_id: str,
    model_id: str | None = None,
    formats: list[str] | None = None,
    output_dir: str | None = None,
) -> PackageSpec:
    """Check a package call and build its job spec (the tool and run_workflow both come here)."""
    modality = load_prepared(ws, run_id).get("modality", "tabular")
    meta = load_model_meta(ws, run_id, model_id)
    allowed = KERAS_FORMATS if meta["framework"] == "keras" else SKLEARN_FORMATS
    onnx = (meta.get("search") or {}).get("onnx", True)
    chosen = list(dict.fromkeys(formats or default_formats(meta["framework"], modality, onnx)))
    bad = [f for f in chosen if f not in allowed]
    if bad:
        raise InvalidInputError(
            f"Formats {bad} do not apply to a {meta['framework']} model. Choose from {list(allowed)}."
        )
    checked = ws.relative(check_output_dir(ws, output_dir)) if output_dir else None
    return PackageSpec(run_id=run_id, model_id=meta["model_id"], formats=chosen, output_dir=checked)


def package(
    ws: Workspace,
    run_id: runs.RunId,
    model_id: Annotated[str | None, Field(description="Model to package; default the run's latest.")] = None,
    formats: Annotated[
        list[Format] | None,
        Field(description="Formats to export. Default: keras, onnx, tflite (Keras) or joblib, onnx (scikit-learn)."),
    ] = None,
    output_dir: Annotated[
        str | None,
        Field(
            description="New or empty folder inside the workspace (or an earlier package); default <run>/deployment."
        ),
    ] = None,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Build deployment/ (model formats, preprocessing, inference.py, docs, manifest) and verify it.

    Every format is loaded in a fresh process and must reproduce the model's test predictions.
    """
    spec = package_spec(ws, run_id, model_id, formats, output_dir)
    return run_as_job(ws, spec, namespace=runs.run_namespace(ws, run_id), wait_seconds=wait_seconds, report=report)
