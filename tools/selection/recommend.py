"""Phase 2 — `recommend_architecture`: task analysis and a ranked list of architectures.

Rules grounded in what is known to work on tabular data (gradient-boosted trees and random
forests first on small and medium data; a DNN on large, wide, mostly numeric data; linear models
as the fast baseline; k-means / Gaussian mixtures for clustering; CNN / RNN / Transformer for
images, sequences and text), optionally backed by a timed probe that fits the top candidates on
the training split and ranks them by validation score. Stores `ml-expert/task-analysis` and
`ml-expert/architecture`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ml_expert.memory.errors import TrainingError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import load_prepared
from ml_expert.tools.core.architectures import is_keras
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobSpec, JobStatus, ProgressFn, WaitSeconds
from ml_expert.tools.workspace import Workspace


class TaskAnalysis(BaseModel):
    type: Literal["classification", "regression", "clustering"]
    task_type: str = Field(description="binary, multiclass, regression or clustering.")
    complexity: Literal["low", "medium", "high"]
    complexity_rule: str
    data_size: int = Field(description="Rows after cleaning (all splits).")
    train_rows: int
    features: int = Field(description="Features after encoding.")
    raw_features: int
    classes: int | None
    imbalance_ratio: float | None
    modality: str
    gpus: int = Field(description="GPUs visible on this machine.")


class Candidate(BaseModel):
    architecture: str
    score: float = Field(description="Rule score in [0, 1]; replaced by the validation score when probed.")
    reason: str
    probe: dict[str, float] | None = Field(None, description="Measured: validation metrics and fit seconds.")


class ArchitectureRecommendation(BaseModel):
    run_id: str
    task_analysis: TaskAnalysis
    candidates: list[Candidate] = Field(description="Best first.")
    recommended: str
    why: str = Field(description="Why the top pick beats the others for this dataset.")
    distribution: str = Field(description="Suggested train(distribution=...) for this machine.")
    probed: bool
    next_step: str


def count_gpus() -> int:
    """GPUs on this machine, without importing TensorFlow (nvidia-smi, if present)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def analyze_task(prepared: PreparedData, gpus: int) -> TaskAnalysis:
    splits = prepared.splits
    rows = sum(splits.values())
    features = prepared.features_out
    task = prepared.task_type
    dist = prepared.class_distribution or {}
    train_counts = list(dist.get("train", {}).values())
    classes = len(prepared.label_mapping) if prepared.label_mapping else None
    cells = rows * features
    complexity = "low" if cells < 100_000 else "medium" if cells < 10_000_000 else "high"
    if classes and classes > 20 and complexity != "high":
        complexity = "medium" if complexity == "low" else "high"
    return TaskAnalysis(
        type="classification" if is_classification(task) else task,
        task_type=task,
        complexity=complexity,
        complexity_rule="rows × encoded features: low < 100k, medium < 10M, high above; more than 20 classes "
        "raises it one level.",
        data_size=rows,
        train_rows=splits["train"],
        features=features,
        raw_features=len(prepared.features_in),
        classes=classes,
        imbalance_ratio=round(max(train_counts) / min(train_counts), 2) if train_counts else None,
        modality=prepared.modality,
        gpus=gpus,
    )


def rank_candidates(ta: TaskAnalysis) -> list[Candidate]:
    """Rule-based ranking; each reason is one line a person can check."""
    if ta.modality != "tabular" or ta.type == "clustering":
        return _non_tabular_candidates(ta)
    return _tabular_candidates(ta)


def _non_tabular_candidates(ta: TaskAnalysis) -> list[Candidate]:
    """Images -> CNN; sequences -> RNN / conv1d / Transformer; text -> Transformer / RNN; clustering."""
    if ta.modality == "image":
        return [
            Candidate(
                architecture="cnn",
                score=0.95,
                reason="Convolutions share weights across the image: the standard, sample-efficient choice for pixels.",
            ),
            Candidate(architecture="dnn", score=0.5, reason="Flattened pixels lose locality; a baseline only."),
        ]
    if ta.modality in ("sequence", "text"):
        text = ta.modality == "text"
        return [
            Candidate(
                architecture="transformer" if text else "rnn",
                score=0.9,
                reason="Self-attention over tokens captures word order and context."
                if text
                else "LSTM/GRU cells model temporal dependencies over the lookback window.",
            ),
            Candidate(
                architecture="rnn" if text else "conv1d",
                score=0.85,
                reason="A (bi)LSTM over embeddings is a strong small-data text model."
                if text
                else "1-D convolutions: nearly as accurate on short windows and much faster.",
            ),
            Candidate(
                architecture="conv1d" if text else "transformer",
                score=0.75,
                reason="Fast n-gram-like filters." if text else "Attention over time steps; needs more data.",
            ),
        ]
    if ta.type == "clustering":
        return [
            Candidate(architecture="kmeans", score=0.8, reason="Fast, simple spherical clusters; the usual start."),
            Candidate(architecture="gaussian_mixture", score=0.7, reason="Soft, elliptical clusters; slower."),
        ]
    raise ValueError(f"no candidates for modality {ta.modality!r}")


def _tabular_candidates(ta: TaskAnalysis) -> list[Candidate]:
    """Trees first on small and medium tables; linear when features outnumber rows; a DNN on large data."""
    rows, feats = ta.train_rows, ta.features
    scores = {
        "gradient_boosting": (
            0.9,
            "Gradient-boosted trees (HistGradientBoosting) are the strongest default on "
            "small and medium tabular data: nonlinear, robust to scaling and outliers.",
        ),
        "random_forest": (0.85, "Random forests are robust with little tuning and hard to overfit badly."),
        "linear": (0.6, "Linear/logistic regression: the fast, interpretable baseline."),
        "dnn": (0.5, "A DNN (the seed's 256-128-64) needs many rows to beat trees on tabular data."),
    }
    if ta.type == "regression" and ta.data_size < 10_000:
        scores["random_forest"] = (
            0.92,
            "Random forests on a small regression set (< 10,000 rows, the seed's rule): low variance without tuning.",
        )
    if feats > max(rows / 5, 50):
        scores["linear"] = (
            0.88,
            f"{feats} features for {rows} training rows: a regularised linear model "
            "resists overfitting where trees and networks struggle.",
        )
    if rows >= 50_000 and feats >= 100:
        scores["dnn"] = (
            0.93,
            f"{rows} rows × {feats} mostly numeric features: enough data for a DNN to learn "
            "feature interactions that trees approximate piecewise.",
        )
    elif ta.type == "classification" and feats > 100 and rows >= 5_000:
        scores["dnn"] = (0.8, "More than 100 features (the seed's rule for a DNN) with enough rows to fit it.")
    ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])
    return [Candidate(architecture=a, score=s, reason=r) for a, (s, r) in ranked]


def _why(cands: list[Candidate], probed: bool) -> str:
    top, rest = cands[0], cands[1:]
    if probed and top.probe:
        others = ", ".join(f"{c.architecture} {c.score:.3f}" for c in rest if c.probe)
        return (
            f"{top.architecture} scored best on the validation split ({top.score:.3f}; others: {others}). " + top.reason
        )
    return f"{top.architecture} ranks first: {top.reason} Next: " + "; ".join(
        f"{c.architecture} ({c.score:.2f})" for c in rest
    )


def rank_by_probe(cands: list[Candidate], measured: dict[str, dict[str, float]]) -> list[Candidate]:
    """Candidates with their measured validation scores, best first (unmeasured ones last, by rule score)."""
    for c in cands:
        if c.architecture in measured:
            c.probe = measured[c.architecture]
            c.score = round(measured[c.architecture]["score"], 4)
    return sorted(cands, key=lambda c: (c.probe is None, -c.score))


class ProbeSpec(JobSpec):
    """A recommend_architecture call with a probe, run in a worker (fitting needs scikit-learn / TensorFlow)."""

    kind = "probe"
    probe_seconds: float = Field(gt=0, le=600)
    max_candidates: int = Field(3, ge=1, le=5)


Measure = Callable[[list[str]], dict[str, dict[str, float]]]  # architectures -> measured metrics (the probe)


def recommend(
    ws: Workspace, run_id: str, max_candidates: int, measure: Measure | None = None
) -> ArchitectureRecommendation:
    """Rank the architectures for a run — by the rules, or measured when a probe is given (training's probe
    job and run_workflow pass `training.probe.measure` bound to a budget) — and record the phase. The one ranking
    path."""
    prepared = load_prepared(ws, run_id)
    gpus = count_gpus()
    ta = analyze_task(prepared, gpus)
    cands = rank_candidates(ta)
    probed = measure is not None
    if measure is not None:
        cands = rank_by_probe(cands, measure([c.architecture for c in cands[:max_candidates]]))
    top = cands[0].architecture
    result = ArchitectureRecommendation(
        run_id=run_id,
        task_analysis=ta,
        candidates=cands,
        recommended=top,
        why=_why(cands, probed),
        distribution="mirrored" if gpus > 1 and is_keras(top) else "none",
        probed=probed,
        next_step=f"Call train(run_id='{run_id}', architecture='{top}').",
    )
    runs.record_phase(ws, run_id, "recommend", {"task-analysis": ta, "architecture": result})
    return result


def recommend_architecture(
    ws: Workspace,
    run_id: runs.RunId,
    probe_seconds: Annotated[
        float,
        Field(
            description="0: rules only. >0: fit the top candidates within this budget and rank by "
            "validation score (e.g. 30); runs as a job.",
            ge=0,
            le=600,
        ),
    ] = 0,
    max_candidates: Annotated[int, Field(description="How many candidates to probe.", ge=1, le=5)] = 3,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> ArchitectureRecommendation | JobStatus:
    """Analyze the task (type, complexity, size, features, classes) and rank architectures with reasons.

    A probe that outlasts wait_seconds returns its job (follow with get_job). Then call train(run_id=...).
    """
    if probe_seconds == 0:
        return recommend(ws, run_id, max_candidates)
    load_prepared(ws, run_id)  # a clear error now, not in the worker
    spec = ProbeSpec(run_id=run_id, probe_seconds=probe_seconds, max_candidates=max_candidates)
    wait = probe_seconds + 120 if wait_seconds is None else wait_seconds
    status = run_as_job(ws, spec, namespace=runs.run_namespace(ws, run_id), wait_seconds=wait, report=report)
    if status.status == "succeeded":
        return ArchitectureRecommendation.model_validate(status.result)
    if status.status in ("queued", "running"):
        return status
    raise TrainingError(f"The probe job {status.job_id} ended {status.status}: {status.error}")
