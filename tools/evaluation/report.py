"""`evaluation_report.md`: the seed's sections (performance metrics, classification report, model
summary, training history) plus the baseline, the overfitting verdict, the target and the pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml_expert.tools import runs
from ml_expert.tools.artifacts import model_dir
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.plots import main_metric
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.workspace import Workspace

LOWER_IS_BETTER = {"loss", "mae", "mse", "rmse", "mape", "log_loss", "davies_bouldin"}


def history_summary(history: dict[str, list[float]]) -> dict[str, Any]:
    """Best validation loss / metric and epochs trained."""
    metric = main_metric(history)
    out: dict[str, Any] = {"epochs": len(history.get("loss", []))}
    if history.get("val_loss"):
        out["best_val_loss"] = min(history["val_loss"])
    if metric and history.get(f"val_{metric}"):
        values = history[f"val_{metric}"]
        out[f"best_val_{metric}"] = min(values) if metric in LOWER_IS_BETTER else max(values)
    return out


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _performance(run_id: str, dataset: str | None, ev: Any, prepared: PreparedData) -> list[str]:
    lines = [
        "# Model Evaluation Report",
        "",
        f"Run `{run_id}` · model `{ev.model_id}` · dataset `{dataset}` · target `{prepared.target}` · "
        f"task {ev.task_type}",
        "",
        "## Performance Metrics (test split, never seen in training)",
        "",
        _table(
            [{"metric": k, "test": v, "baseline": ev.baseline_metrics.get(k, "")} for k, v in ev.test_metrics.items()],
            ["metric", "test", "baseline"],
        ),
        "",
        f"**Baseline:** {ev.baseline_verdict}",
        "",
    ]
    if getattr(ev, "interval", None) is not None:
        lines += [f"**Uncertainty:** {ev.interval.sentence()}", ""]
    if ev.target:
        t = ev.target
        goal = f">= {t['min']}" if "min" in t else f"<= {t['max']}"
        lines += [f"**Target:** {t['metric']} {goal} → {t['value']:.4f} — **{'PASS' if t['passed'] else 'FAIL'}**", ""]
    if ev.classification_report:
        rows = [{"class": k, **v} for k, v in ev.classification_report.items() if isinstance(v, dict)]
        lines += [
            "## Classification Report",
            "",
            _table(rows, ["class", "precision", "recall", "f1-score", "support"]),
            "",
            "![Confusion matrix](confusion_matrix.png)",
            "",
        ]
    elif ev.task_type == "regression":
        lines += ["## Residuals", "", "![Residuals](residuals.png)", ""]
    return lines


def _model_and_training(meta: ModelMeta, prepared: PreparedData, history: dict[str, Any]) -> list[str]:
    def line(k: str, v: Any) -> str:
        return f"- {k.replace('_', ' ').capitalize()}: " + (f"{v:.4f}" if isinstance(v, float) else str(v))

    return [
        "## Model Summary",
        "",
        f"- Architecture: {meta.architecture} ({meta.framework})",
        f"- Parameters: {meta.parameters:,}",
        f"- Training Time: {meta.train_seconds:.2f} seconds",
        f"- Features: {prepared.features_out} (from {len(prepared.features_in)} input columns)",
        f"- Rows: train {prepared.splits['train']}, validation {prepared.splits['val']}, "
        f"test {prepared.splits['test']}",
        *[f"- Note: {n}" for n in meta.notes],
        "",
        "## Training History",
        "",
        *[line(k, v) for k, v in history_summary(history).items()],
        "",
        "![Training curves](training_curves.png)",
        "",
    ]


def _overfitting_and_leaderboard(ev: Any, leaderboard: list[dict[str, Any]] | None) -> list[str]:
    lines = [
        "## Overfitting",
        "",
        _table([{"split": k, "score": v} for k, v in ev.split_scores.items()], ["split", "score"]),
        "",
        f"Rule: {ev.overfitting_rule}. Verdict: **{'overfitting' if ev.overfitting else 'no overfitting detected'}**.",
        "",
    ]
    if leaderboard:
        rows = [
            {"model_id": e["model_id"], "architecture": e["architecture"], **e["test_metrics"]} for e in leaderboard
        ]
        cols = ["model_id", "architecture", *list(leaderboard[0]["test_metrics"])[:6]]
        lines += ["## Leaderboard", "", _table(rows, cols), ""]
    return lines


def write_report(
    ws: Workspace,
    run_id: str,
    meta: ModelMeta,
    ev: Any,
    prepared: PreparedData,
    leaderboard: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the model's evaluation_report.md (the seed's sections + baseline) in its folder; return the path."""
    folder = model_dir(ws, run_id, ev.model_id)
    history_file = folder / "training_history.json"
    history = json.loads(history_file.read_text()) if history_file.exists() else {}
    lines = [
        *_performance(run_id, runs.get_run(ws, run_id).dataset, ev, prepared),
        *_model_and_training(meta, prepared, history),
        *_overfitting_and_leaderboard(ev, leaderboard),
        *explanations_section(folder),
    ]
    path = folder / "evaluation_report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def explanations_section(folder: Path) -> list[str]:
    """The "Explanations" section, from the model's explanations.json (written by explain); none before."""
    path = folder / "explanations.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = [
        "",
        "## Explanations",
        "",
        f"Permutation importance on {data['rows_used']} {data['split']} rows: the drop of {data['metric']} "
        f"({data['score']:.4f} with nothing shuffled) when one raw column is shuffled, mean ± std over repeats.",
        "",
        _table(data["importance"], ["column", "importance", "std"]),
    ]
    if (folder / "partial_dependence.png").exists():
        lines += ["", "![Partial dependence of the top columns](partial_dependence.png)"]
    for row in data.get("local") or []:
        parts = ", ".join(f"{c} {v:+.4f}" for c, v in list(row["contributions"].items())[:5])
        lines += [
            "",
            f"Row {row['row']}: predicted {row['prediction']}; {row['explained']} = {row['output']:.4f} = "
            f"{row['base_value']:.4f} (average) + contributions: {parts}",
        ]
    if data.get("local_method"):
        lines += ["", f"Local contributions: {data['local_method']}."]
    return lines


def refresh_explanations(ws: Workspace, run_id: str, model_id: str) -> None:
    """Rewrite the Explanations section of the model's evaluation_report.md (and of the run's copy when it is
    this model's), after explain; a model not evaluated yet gets it with its first report."""
    folder = model_dir(ws, run_id, model_id)
    report = folder / "evaluation_report.md"
    if not report.exists():
        return
    text = report.read_text(encoding="utf-8").split("\n\n## Explanations\n")[0]
    report.write_text("\n".join([text, *explanations_section(folder)]), encoding="utf-8")
    metrics = ws.run_dir(run_id) / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text()).get("best_model_id") == model_id:
        (ws.run_dir(run_id) / "evaluation_report.md").write_text(report.read_text(encoding="utf-8"), encoding="utf-8")
