"""Images, sequences and text: CNN / RNN / Transformer trained, evaluated and packaged from raw inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.tools.core.portable.preprocessing import resize_images
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.jobs.tools import list_jobs
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _ok(status: object) -> dict:
    assert status.status == "succeeded", status.error
    return status.result


def _predict_raw(folder: Path, raw: str, method: str = "predict") -> list:
    call = f"ModelInference().{method}({raw})" + (".tolist()" if method == "predict_proba" else "")
    code = (
        f"import sys, json, numpy as np; sys.path.insert(0, {str(folder)!r}); from inference import "
        f"ModelInference; print(json.dumps({call}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=folder.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.slow
def test_pixel_csv_resized_and_packaged_for_raw_arrays_of_the_original_size(jobs_ws: Workspace) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits(as_frame=True)
    digits.frame.to_csv(jobs_ws.root / "pixels.csv", index=False)
    options = {"image_shape": [8, 8], "image_size": [12, 12]}
    analysis = analyze_data(jobs_ws, "pixels.csv", target="target", data_options=options)
    summary = analysis.modality_summary
    assert analysis.modality == "image" and summary["image_shape"] == [12, 12, 1]
    assert summary["original_sizes"] == {"8x8": 1797}
    prepared = prepare_data(jobs_ws, run_id=analysis.run_id)
    assert prepared.input_shape == [12, 12, 1]
    with pytest.raises(InvalidInputError, match=r"image_size must be \[height, width\] between 1 and 4096"):
        analyze_data(jobs_ws, "pixels.csv", target="target", data_options={"image_shape": [8, 8], "image_size": [0, 9]})
    model_id = _ok(train(jobs_ws, analysis.run_id, "cnn", config=TrainConfig(epochs=8), wait_seconds=300))["model_id"]
    ev = _ok(evaluate(jobs_ws, analysis.run_id, wait_seconds=120))["evaluations"][0]
    assert ev["test_metrics"]["accuracy"] >= 0.9
    with pytest.raises(InvalidInputError, match=r"predict scores tables and texts; this run's data are image"):
        predict(jobs_ws, run_id=analysis.run_id, path="pixels.csv")  # refused at the call, before any job starts
    assert not [j for j in list_jobs(jobs_ws).jobs if j.kind == "predict"]
    pkg = _ok(package(jobs_ws, analysis.run_id, model_id=model_id, formats=["keras"], wait_seconds=400))
    folder = jobs_ws.root / pkg["folder"]
    assert "pillow==" in (folder / "requirements.txt").read_text()
    raw = digits.images[::9]  # 8x8, as the CSV held them: the package resizes them like prepare_data did
    preds = _predict_raw(folder, json.dumps(raw.tolist()))
    assert np.mean(np.array(preds) == digits.target[::9]) >= 0.9
    resized = resize_images(raw[:20, ..., None], (12, 12))
    assert _predict_raw(folder, json.dumps(resized.tolist())) == preds[:20]


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
    # a grey picture of another size that sorts first, a note and an empty class folder: the folder's own colour
    # mode and most common size decide (the first file made every image grey and 8x40), and what was skipped is said
    Image.fromarray(np.full((8, 40), 30, np.uint8)).save(ws.root / "photos" / "dark" / "0000.png")
    (ws.root / "photos" / "dark" / "notes.txt").write_text("shot in March")
    (ws.root / "photos" / "empty").mkdir()
    summary = analyze_data(ws, "photos", target="label").modality_summary
    assert summary["image_shape"] == [20, 16, 3] and summary["color_mode"] == "RGB"
    assert summary["skipped_files"] == ["dark/notes.txt"] and summary["empty_class_folders"] == ["empty"]
    assert summary["class_counts"] == {"dark": 13, "light": 12}


def _series(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    load = 10 * np.sin(2 * np.pi * t / 24) + 0.01 * t + rng.normal(0, 1, n)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h").astype(str), "load": load})


@pytest.mark.slow
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
    # the recent rows as the README says, time column included: the CLI read the file name as a number
    folder = jobs_ws.root / pkg["folder"]
    recent = _series().tail(30)
    recent.to_csv(jobs_ws.root / "recent.csv", index=False)
    cli = subprocess.run(
        [sys.executable, "inference.py", str(jobs_ws.root / "recent.csv"), "--format", "json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    last = recent["load"].to_numpy()[-24:].reshape(1, 24, 1).tolist()
    assert np.isclose(json.loads(cli.stdout)[0]["prediction"], _predict_raw(folder, json.dumps(last))[0], atol=1e-4)
    assert "recent_rows" in (folder / "README.md").read_text()  # the usage written for a sequence model
    missing = subprocess.run(
        [sys.executable, "inference.py", "nothing.png"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_sequence_classification_from_npz(jobs_ws: Workspace) -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 30)
    fast = rng.random(400) < 0.5
    phase = rng.uniform(0, 2 * np.pi, (400, 1))
    wave = np.sin(np.where(fast[:, None], 3.0, 1.0) * t + phase)
    X = np.stack([wave, rng.normal(0, 1, (400, 30))], axis=-1) + rng.normal(0, 0.3, (400, 30, 2))
    np.savez(jobs_ws.root / "waves.npz", X=X.astype(np.float32), y=np.where(fast, "fast", "slow"))
    analysis = analyze_data(jobs_ws, "waves.npz", target="speed")
    assert analysis.modality == "sequence" and analysis.modality_summary["sequence_shape"] == [30, 2]
    prepared = prepare_data(jobs_ws, run_id=analysis.run_id)
    assert prepared.task_type == "binary" and prepared.label_mapping == {"0": "fast", "1": "slow"}
    model_id = _ok(train(jobs_ws, analysis.run_id, "conv1d", config=TrainConfig(epochs=15), wait_seconds=300))[
        "model_id"
    ]
    ev = _ok(evaluate(jobs_ws, analysis.run_id, wait_seconds=120))["evaluations"][0]
    assert ev["test_metrics"]["accuracy"] >= 0.9
    pkg = _ok(package(jobs_ws, analysis.run_id, model_id=model_id, formats=["keras"], wait_seconds=400))
    preds = _predict_raw(jobs_ws.root / pkg["folder"], json.dumps(X[:40].round(4).tolist()))
    assert np.mean(np.array(preds) == np.where(fast[:40], "fast", "slow")) >= 0.9


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


@pytest.mark.slow
def test_text_rnn_beats_the_majority_class(jobs_ws: Workspace) -> None:
    """The Transformer on text is covered by tests/test_seams.py (its next_step run checks accuracy too)."""
    arch = "rnn"
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
    # raw rows, as the README shows and the predict tool takes them: one prediction per row, from its text column (a
    # DataFrame was scored cell by cell, 4 rows -> 12 predictions; a missing text was the text "nan")
    rows = [{"id": 1, "review": "what a wonderful and moving film"}, {"id": 2, "review": "boring awful plot"}]
    rows.append({"id": 3, "review": None})
    literal = f"json.loads({json.dumps(json.dumps(rows))})"
    as_rows = _predict_raw(jobs_ws.root / pkg["folder"], f"__import__('pandas').DataFrame({literal})")
    assert as_rows == _predict_raw(jobs_ws.root / pkg["folder"], literal) and as_rows[:2] == ["pos", "neg"]
    tool = predict(jobs_ws, run_id=analysis.run_id, records=rows)
    assert [p.prediction for p in tool.predictions] == as_rows
    probabilities = _predict_raw(jobs_ws.root / pkg["folder"], literal, "predict_proba")
    assert np.allclose([list(p.probabilities.values()) for p in tool.predictions], probabilities, atol=1e-5)


def _anywhere_on_canvas(images: np.ndarray, rng: np.random.Generator, size: int = 12) -> np.ndarray:
    """8x8 digits written at random places on a size x size canvas, as handwriting is."""
    canvas = np.zeros((len(images), size, size), np.float32)
    for k, (row, col) in enumerate(rng.integers(0, size - 7, (len(images), 2))):
        canvas[k, row : row + 8, col : col + 8] = images[k]
    return canvas


@pytest.mark.slow
def test_cnn_of_digits_0_4_fine_tuned_on_few_5_9_beats_scratch(jobs_ws: Workspace) -> None:
    """Digits placed anywhere on the canvas: shape features that hold at any position take many examples to
    learn — the base learns them from 0-4, and about nine images per class of 5-9 then suffice. (On the plain,
    centred 8x8 digits raw pixels are already as good as any learned feature and transfer does not help:
    see bench/transfer_bench.py.)"""
    import keras
    from sklearn.datasets import load_digits

    digits, rng = load_digits(), np.random.default_rng(0)
    low = digits.target < 5
    base_X = np.concatenate([_anywhere_on_canvas(digits.images[low], rng) for _ in range(2)])
    np.savez(jobs_ws.root / "low.npz", X=base_X, y=np.tile(digits.target[low], 2))
    np.savez(jobs_ws.root / "high.npz", X=_anywhere_on_canvas(digits.images[~low], rng), y=digits.target[~low])
    base_run = prepare_data(jobs_ws, path="low.npz", target="digit").run_id
    base = _ok(train(jobs_ws, base_run, "cnn", config=TrainConfig(epochs=10), wait_seconds=300))
    assert base["val_metrics"]["accuracy"] > 0.95
    few = prepare_data(jobs_ws, path="high.npz", target="digit", split=(0.05, 0.05, 0.9))
    assert few.splits["train"] <= 50 and few.splits["test"] > 800
    config = TrainConfig()  # the seed defaults: 100 epochs, early stopping after 10 without progress
    scratch = _ok(train(jobs_ws, few.run_id, "cnn", config=config, wait_seconds=300))
    tuned = _ok(
        train(
            jobs_ws,
            few.run_id,
            "cnn",
            config=config,
            base_model=base["model_id"],
            fine_tune_layers=1,
            wait_seconds=300,
        )
    )
    info = tuned["transfer"]
    assert info["fine_tuned_layers"] == ["conv2d_1"] and info["frozen_layers"] == ["conv2d"]
    assert info["reused_up_to"] == "flatten" and info["fine_tune_epochs"] >= 5
    base_model = keras.saving.load_model(jobs_ws.root / base["artifacts"]["model"], safe_mode=True)
    tuned_base = keras.saving.load_model(jobs_ws.root / tuned["artifacts"]["model"], safe_mode=True).get_layer("base")
    for name, same in (("conv2d", True), ("conv2d_1", False)):  # the frozen layer kept its weights; the other moved
        before, after = base_model.get_layer(name).get_weights(), tuned_base.get_layer(name).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)) is same
    ids = [scratch["model_id"], tuned["model_id"]]
    ev = _ok(evaluate(jobs_ws, few.run_id, model_ids=ids, wait_seconds=120))["evaluations"]
    accuracy = {e["model_id"]: e["test_metrics"]["accuracy"] for e in ev}
    # this draw: 0.68 vs 0.32 on ~800 test images; bench/transfer_bench.py, 3 other draws: +0.07, +0.42, +0.09
    assert accuracy[tuned["model_id"]] >= accuracy[scratch["model_id"]] + 0.05, accuracy


@pytest.mark.slow
def test_transfer_takes_a_user_keras_file_and_checks_it(jobs_ws: Workspace) -> None:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="edges")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="output")(features))
    model.save(jobs_ws.root / "mine.keras")
    (jobs_ws.root / "notes.keras").write_text("not a model")
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(jobs_ws.root / "d.npz", X=digits.images[:400], y=digits.target[:400])
    run = prepare_data(jobs_ws, path="d.npz", target="digit").run_id
    result = _ok(train(jobs_ws, run, "cnn", config=TrainConfig(epochs=8), base_model="mine.keras", wait_seconds=300))
    assert result["learned"] and result["transfer"]["frozen_layers"] == ["edges"]
    assert result["transfer"]["base_model"] == "mine.keras" and result["transfer"]["fine_tune_epochs"] == 0
    tuned = keras.saving.load_model(jobs_ws.root / result["artifacts"]["model"], safe_mode=True)
    before, after = model.get_layer("edges").get_weights(), tuned.get_layer("base").get_layer("edges").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    config = TrainConfig(epochs=3)
    free = _ok(train(jobs_ws, run, "cnn", config=config, base_model="mine.keras", freeze=False, wait_seconds=300))
    assert free["transfer"]["frozen_layers"] == [] and free["transfer"]["fine_tuned_layers"] == ["edges"]
    trained = keras.saving.load_model(jobs_ws.root / free["artifacts"]["model"], safe_mode=True)
    assert not np.array_equal(trained.get_layer("base").get_layer("edges").get_weights()[0], before[0])
    with pytest.raises(InvalidInputError, match="with freeze=false every layer trains already"):
        train(jobs_ws, run, "cnn", base_model="mine.keras", freeze=False, fine_tune_layers=1)
    with pytest.raises(InvalidInputError, match="pass base_model too"):
        train(jobs_ws, run, "cnn", fine_tune_layers=1)
    with pytest.raises(InvalidInputError, match="not a readable Keras model file"):
        train(jobs_ws, run, "cnn", base_model="notes.keras")
    with pytest.raises(InvalidInputError, match=r"model_id or a \.keras file"):
        train(jobs_ws, run, "cnn", base_model="d.npz")
    with pytest.raises(NotFoundError, match="No Keras model 'mdl_0000dead'"):
        train(jobs_ws, run, "cnn", base_model="mdl_0000dead")
    with pytest.raises(InvalidInputError, match="is not a model id"):  # an id never becomes part of a path
        train(jobs_ws, run, "cnn", base_model="mdl_x/../../../outside/x")
    _series().to_csv(jobs_ws.root / "s.csv", index=False)
    options = {"time_column": "time", "lookback": 8}
    seq = analyze_data(jobs_ws, "s.csv", target="load", modality="sequence", data_options=options).run_id
    prepare_data(jobs_ws, run_id=seq)
    with pytest.raises(InvalidInputError, match=r"takes inputs of shape \[8, 8, 1\]; this run's data is \[8, 1\]"):
        train(jobs_ws, seq, "rnn", base_model="mine.keras")  # refused at the call, before any job starts
    assert [j for j in list_jobs(jobs_ws).jobs if j.run_id == seq] == []


def test_a_hub_name_as_base_model_says_that_nothing_is_downloaded(ws: Workspace) -> None:
    """base_model="imagenet" was refused as a path that "does not exist ... Check the name"."""
    from conftest import prepared_run

    run = prepared_run(ws, "digits")
    with pytest.raises(InvalidInputError, match=r"'imagenet' is neither a model id nor a .keras file.*never downloads"):
        train(ws, run, "dnn", base_model="imagenet")


def test_the_fine_tuning_stage_never_runs_more_epochs_than_asked() -> None:
    """epochs=3 with fine_tune_layers ran 3 + 5 epochs: the stage's floor of 5 ignored the user's epochs."""
    from ml_expert.tools.training.transfer import fine_tune_epochs

    assert [fine_tune_epochs(e) for e in (1, 3, 8, 20, 100)] == [1, 3, 5, 10, 50]
