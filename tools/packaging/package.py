"""Phase 5 — `package`: check the request and submit the build of a verified deployment folder.

`package_spec` validates the call (model exists, formats fit its framework, the output folder is
safe to write) and builds the `PackageSpec`; the worker (`packaging.build.run_package_job`) builds
and verifies the folder. Stores `ml-expert/deployment`.

The output folder rule protects the user's files: a package is written to the run's own
`deployment/` by default, or to a folder inside the workspace that is missing, empty, or an
earlier package this server wrote (it has ml-expert's `manifest.json`). The workspace root,
anything under `.ml-expert/`, an existing file and any other existing folder are refused.
Packaging into an earlier package replaces only the files its manifest lists as written by
ml-expert and keeps every other file (a Dockerfile, notes); it is refused while a listed file
was changed since it was written (its sha256 differs from the manifest), so no edit is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, PathNotAllowedError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import ModelJobSpec, load_model_meta, load_prepared, sha256
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobStatus, ProgressFn, WaitSeconds
from ml_expert.tools.packaging.export import KERAS_FORMATS, SKLEARN_FORMATS, Format, FormatReport, default_formats
from ml_expert.tools.training.refit import REFIT_SHARE, decide_refit
from ml_expert.tools.workspace import Workspace

MANIFEST_KEYS = {"run_id", "model_id", "runtimes", "files"}


class PackageSpec(ModelJobSpec):
    kind = "package"
    formats: list[str] = Field(min_length=1)
    output_dir: str | None = Field(None, description="Checked folder relative to the workspace; None = run default.")
    refit: bool = Field(False, description="Refit the model on all rows first and package that refit.")


class PackageResult(BaseModel):
    run_id: str
    model_id: str = Field(description="The packaged model (the refit, when one was made).")
    refit_of: str | None = Field(
        None, description="The evaluated model the packaged one refits on all rows (its test metrics are shown)."
    )
    folder: str
    formats: list[FormatReport]
    default_runtime: str | None = Field(description="Fastest verified runtime; inference.py uses it by default.")
    verified: bool = Field(description="True when at least one format passed verification.")
    test_metric: dict[str, float]
    files: list[str]
    kept: list[str] = Field(
        default_factory=list, description="Files of the earlier package folder that ml-expert did not write, kept."
    )
    notes: list[str] = Field(default_factory=list, description="The refit on all rows, or why it was not made.")
    usage: str
    next_step: str


def package_files(folder: Path) -> dict[str, str] | None:
    """The files (relative path -> sha256) an earlier package's manifest.json lists as written by ml-expert, or
    None when the folder holds no manifest.json of the shape ml-expert writes. Listed paths that would lead out
    of the folder are left out."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not set(manifest) >= MANIFEST_KEYS or not isinstance(manifest["files"], dict):
        return None
    return {
        rel: str(digest)
        for rel, digest in manifest["files"].items()
        if isinstance(rel, str) and rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts
    }


def is_package_folder(folder: Path) -> bool:
    """True when the folder holds a manifest.json of the shape ml-expert writes."""
    return package_files(folder) is not None


def changed_package_files(folder: Path) -> list[str]:
    """Files the earlier package in folder wrote that were changed since: their sha256 differs from the manifest's,
    or something other than a plain file took their place. A listed file that was deleted is not a change."""
    listed, inside = package_files(folder) or {}, folder.resolve()
    changed = []
    for rel, digest in listed.items():
        path = folder / rel
        if not os.path.lexists(path):
            continue
        moved = path.is_symlink() or not path.is_file() or inside not in path.resolve().parents  # e.g. a linked folder
        if moved or sha256(path) != digest:
            changed.append(rel)
    return sorted(changed)


def check_unchanged_package(ws: Workspace, folder: Path) -> None:
    """Refuse to package into an earlier package whose own files were edited: replacing them would lose the edits."""
    changed = changed_package_files(folder)
    if changed:
        raise InvalidInputError(
            f"The package folder {ws.relative(folder)!r} holds an earlier package whose files {changed[:20]} were "
            "changed after ml-expert wrote them (their sha256 differs from its manifest.json). Packaging again "
            "replaces every file the earlier package wrote (and keeps all others), so these changes would be lost. "
            "Move or rename the changed files, or pass another output_dir for the new package."
        )


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
    check_unchanged_package(ws, final)
    return final


def test_metrics_of(ws: Workspace, run_id: str, model_id: str) -> dict[str, float]:
    """The first four test metrics of the model's evaluation ({} when it was not evaluated)."""
    metrics_file = ws.run_dir(run_id) / "metrics.json"
    if not metrics_file.exists():
        return {}
    evs = json.loads(metrics_file.read_text())["evaluations"]
    ev = next((e for e in evs if e["model_id"] == model_id), None)
    return dict(list(ev["test_metrics"].items())[:4]) if ev else {}


def package_spec(
    ws: Workspace,
    run_id: str,
    model_id: str | None = None,
    formats: list[str] | None = None,
    output_dir: str | None = None,
    refit_all_rows: bool | None = None,
) -> PackageSpec:
    """Check a package call and build its job spec (the tool and run_workflow both come here)."""
    modality = load_prepared(ws, run_id).modality
    meta = load_model_meta(ws, run_id, model_id)
    allowed = KERAS_FORMATS if meta.framework == "keras" else SKLEARN_FORMATS
    onnx = (meta.search or {}).get("onnx", True)
    chosen = list(dict.fromkeys(formats or default_formats(meta.framework, modality, onnx)))
    bad = [f for f in chosen if f not in allowed]
    if bad:
        raise InvalidInputError(f"Formats {bad} do not apply to a {meta.framework} model. Choose from {list(allowed)}.")
    checked = ws.relative(check_output_dir(ws, output_dir)) if output_dir else None
    if output_dir is None:
        check_unchanged_package(ws, ws.run_dir(run_id) / "deployment")
    refit = decide_refit(meta, refit_all_rows, evaluated=bool(test_metrics_of(ws, run_id, meta.model_id)))
    return PackageSpec(run_id=run_id, model_id=meta.model_id, formats=chosen, output_dir=checked, refit=refit)


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
    refit_all_rows: Annotated[
        bool | None,
        Field(
            description="Refit an evaluated auto model on all rows and package the refit; default: an evaluated "
            f"regression whose refit costs at most {REFIT_SHARE:.0%} of its train budget. false: package it as it is."
        ),
    ] = None,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Build deployment/ (model formats, preprocessing, inference.py, docs, manifest) and verify it.

    Every format is loaded in a fresh process and must reproduce the model's test predictions. An auto model may
    first be refit on all rows (see refit_all_rows; the evaluated one is kept).
    """
    spec = package_spec(ws, run_id, model_id, formats, output_dir, refit_all_rows)
    return run_as_job(ws, spec, namespace=runs.run_namespace(ws, run_id), wait_seconds=wait_seconds, report=report)
