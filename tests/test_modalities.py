"""Images, sequences and text: CNN / RNN / Transformer trained, evaluated and packaged from raw inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_expert.tools.analysis import analyze_data
from ml_expert.tools.errors import InvalidInputError
from ml_expert.tools.evaluation import evaluate
from ml_expert.tools.models import TrainConfig
from ml_expert.tools.packaging import package
from ml_expert.tools.preparation import prepare_data
from ml_expert.tools.training import train
from ml_expert.tools.workspace import Workspace


def _ok(status: object) -> dict:
    assert status.status == "succeeded", status.error
    return status.result


def _predict_raw(folder: Path, raw: str) -> list:
    code = (
        f"import sys, json, numpy as np; sys.path.insert(0, {str(folder)!r}); from inference import "
        f"ModelInference; print(json.dumps(ModelInference().predict({raw})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=folder.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_digits_as_images_cnn(jobs_ws: Workspace) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(jobs_ws.root / "digits.npz", X=digits.images.astype(np.float32), y=digits.target)
    analysis = analyze_data(jobs_ws, "digits.npz", target="digit")
    assert analysis.modality == "image" and analysis.modality_summary["image_shape"] == [8, 8, 1]
    assert analysis.target.n_classes == 10
    prepared = prepare_data(jobs_ws, run_id=analysis.run_id)
    assert prepared.input_shape == [8, 8, 1]
    model_id = _ok(train(jobs_ws, analysis.run_id, "cnn", config=TrainConfig(epochs=15), wait_seconds=300))["model_id"]
    ev = _ok(evaluate(jobs_ws, analysis.run_id, wait_seconds=120))["evaluations"][0]
    assert ev["test_metrics"]["accuracy"] >= 0.95
    pkg = _ok(package(jobs_ws, analysis.run_id, model_id=model_id, wait_seconds=400))
    assert all(f["shipped"] for f in pkg["formats"]), pkg["formats"]
    raw = digits.images[:5].tolist()
    preds = _predict_raw(jobs_ws.root / pkg["folder"], json.dumps(raw))
    assert preds == [int(v) for v in digits.target[:5]]


def test_image_folder_is_read_per_class(ws: Workspace) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 30), ("light", 220)):
        (ws.root / "photos" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(level, 10, (20, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(ws.root / "photos" / label / f"{i}.png")
    analysis = analyze_data(ws, "photos", target="label")
    summary = analysis.modality_summary
    assert summary["image_shape"] == [20, 16, 3] and summary["class_counts"] == {"dark": 12, "light": 12}
    assert summary["original_sizes"] == {"20x16": 24}


def _series(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    load = 10 * np.sin(2 * np.pi * t / 24) + 0.01 * t + rng.normal(0, 1, n)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h").astype(str), "load": load})


def test_rnn_forecast_beats_the_naive_last_value(jobs_ws: Workspace) -> None:
    _series().to_csv(jobs_ws.root / "series.csv", index=False)
    options = {"time_column": "time", "lookback": 24}
    analysis = analyze_data(jobs_ws, "series.csv", target="load", modality="sequence", data_options=options)
    prepared = prepare_data(jobs_ws, run_id=analysis.run_id)
    assert prepared.input_shape == [24, 1] and prepared.task_type == "regression"
    _ok(train(jobs_ws, analysis.run_id, "rnn", config=TrainConfig(epochs=15), wait_seconds=300))
    ev = _ok(evaluate(jobs_ws, analysis.run_id, wait_seconds=120))["evaluations"][0]
    raw = np.load(jobs_ws.run_dir(analysis.run_id) / "data" / "raw_test.npz")
    naive = np.sqrt(np.mean((raw["X"][:, -1, 0] - raw["y"]) ** 2))  # tomorrow = the last value seen
    assert ev["test_metrics"]["rmse"] < 0.7 * naive
    pkg = _ok(package(jobs_ws, analysis.run_id, wait_seconds=400))
    assert {f["format"] for f in pkg["formats"] if f["shipped"]} == {"keras", "onnx", "tflite"}
    window = raw["X"][:3].tolist()
    preds = _predict_raw(jobs_ws.root / pkg["folder"], json.dumps(window))
    assert np.allclose(preds, raw["y"][:3], atol=4)


def _reviews(n: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    pos = ["great", "excellent", "love", "wonderful", "best", "amazing", "moving"]
    neg = ["terrible", "awful", "hate", "worst", "boring", "bad", "dull"]
    filler = ["the", "movie", "was", "a", "and", "with", "story", "acting", "plot", "it", "this", "film", "really"]
    rows = []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = [*rng.choice(filler, 8), *rng.choice(pos if label else neg, 2)]
        rng.shuffle(words)
        noisy = label if rng.random() > 0.1 else 1 - label  # 10% label noise
        rows.append({"review": " ".join(words), "sentiment": "pos" if noisy else "neg"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_text_models_beat_the_majority_class(jobs_ws: Workspace, arch: str) -> None:
    _reviews().to_csv(jobs_ws.root / "reviews.csv", index=False)
    analysis = analyze_data(
        jobs_ws, "reviews.csv", target="sentiment", modality="text", data_options={"text_column": "review"}
    )
    assert analysis.modality_summary["documents"] == 800
    prepare_data(jobs_ws, run_id=analysis.run_id)
    result = _ok(train(jobs_ws, analysis.run_id, arch, config=TrainConfig(epochs=10), wait_seconds=300))
    vocabulary = json.loads((jobs_ws.root / result["artifacts"]["folder"] / "vocabulary.json").read_text())
    assert "great" in vocabulary and "terrible" in vocabulary
    ev = _ok(evaluate(jobs_ws, analysis.run_id, wait_seconds=120))["evaluations"][0]
    assert ev["test_metrics"]["accuracy"] >= ev["baseline_metrics"]["accuracy"] + 0.25 and ev["beats_baseline"]
    pkg = _ok(package(jobs_ws, analysis.run_id, wait_seconds=400))
    assert {f["format"] for f in pkg["formats"] if f["shipped"]} == {"keras", "savedmodel"}
    preds = _predict_raw(jobs_ws.root / pkg["folder"], '["what a wonderful and moving film", "boring awful plot"]')
    assert preds == ["pos", "neg"]


def test_transfer_learning_reuses_a_frozen_base(jobs_ws: Workspace) -> None:
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    low = digits.target < 5
    np.savez(jobs_ws.root / "low.npz", X=digits.images[low], y=digits.target[low])
    high = np.flatnonzero(~low)[:300]
    np.savez(jobs_ws.root / "high.npz", X=digits.images[high], y=digits.target[high])
    base_run = prepare_data(jobs_ws, path="low.npz", target="digit").run_id
    base = _ok(train(jobs_ws, base_run, "cnn", config=TrainConfig(epochs=10), wait_seconds=300))
    run = prepare_data(jobs_ws, path="high.npz", target="digit", split=(0.2, 0.1, 0.7)).run_id
    head_only = _ok(
        train(jobs_ws, run, "cnn", config=TrainConfig(epochs=20), base_model=base["model_id"], wait_seconds=300)
    )
    base_model = keras.saving.load_model(jobs_ws.root / base["artifacts"]["model"], safe_mode=True)
    tuned = keras.saving.load_model(jobs_ws.root / head_only["artifacts"]["model"], safe_mode=True)
    conv = [w for layer in base_model.layers if "conv" in layer.name for w in layer.get_weights()]
    frozen = [w for layer in tuned.get_layer("base").layers if "conv" in layer.name for w in layer.get_weights()]
    assert conv and all(np.array_equal(a, b) for a, b in zip(conv, frozen, strict=True))  # the base stayed frozen
    assert head_only["learned"] and head_only["val_metrics"]["accuracy"] > 0.6
    fine = _ok(
        train(
            jobs_ws,
            run,
            "cnn",
            config=TrainConfig(epochs=10),
            base_model=base["model_id"],
            fine_tune_layers=2,
            wait_seconds=300,
        )
    )
    assert fine["epochs_trained"] > 10 and fine["learned"]  # a second, fine-tuning stage ran
    with pytest.raises(InvalidInputError, match="inputs of shape"):
        _series().to_csv(jobs_ws.root / "s.csv", index=False)
        options = {"time_column": "time", "lookback": 8}
        seq = analyze_data(jobs_ws, "s.csv", target="load", modality="sequence", data_options=options).run_id
        prepare_data(jobs_ws, run_id=seq)
        status = train(jobs_ws, seq, "rnn", base_model=base["model_id"], wait_seconds=120)
        raise InvalidInputError(status.error or "")
