"""Transfer learning vs training from scratch: a CNN trained on digits 0-4 reused for few images of 5-9.

Two layouts of the same scikit-learn digits, each over several random draws (placements and splits):
- "centred": the plain 8x8 images;
- "anywhere": each 8x8 digit at a random place on a 12x12 canvas (the base sees two placements of 0-4).
The few-shot run trains on 5 % of digits 5-9 (~44 images, ~9 per class), validates on 5 % and tests on
the other 90 %. Compared, with the same TrainConfig: the CNN from scratch, the frozen base + new head,
and the same with the top conv layer fine-tuned (`fine_tune_layers=1`). Reports test accuracy per draw,
the mean, and transfer minus scratch (the baseline of the same run). Also a linear probe: logistic
regression on the few training images, as raw pixels vs as the base's frozen features — transfer can
only help where the base's features beat the pixels.
Writes bench/results/transfer_bench.json.

    python bench/transfer_bench.py [--draws 3] [--epochs 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
LAYOUTS = {"centred": 8, "anywhere": 12}


def layout(images: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    canvas = np.zeros((len(images), size, size), np.float32)
    for k, (row, col) in enumerate(rng.integers(0, size - 7, (len(images), 2))):
        canvas[k, row : row + 8, col : col + 8] = images[k]
    return canvas


def linear_probe(ws: Any, run_id: str, base_model: str) -> dict[str, float]:
    """Test accuracy of a logistic regression on raw pixels vs on the base's frozen features."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from ml_expert.tools.artifacts import load_split
    from ml_expert.tools.training.transfer import feature_layer

    (X, y), (X_test, y_test) = load_split(ws, run_id, "train"), load_split(ws, run_id, "test")
    base = keras.saving.load_model(ws.root / base_model, safe_mode=True, compile=False)
    features = keras.Model(base.inputs, feature_layer(base).output)
    out = {}
    for name, encode in (
        ("pixels", lambda a: a.reshape(len(a), -1)),
        ("base_features", lambda a: features.predict(a, verbose=0)),
    ):
        probe = LogisticRegression(max_iter=5000).fit(encode(X), y)
        out[name] = round(float(probe.score(encode(X_test), y_test)), 4)
    return out


def one_draw(ws: Any, name: str, draw: int, epochs: int) -> dict[str, float]:
    from sklearn.datasets import load_digits

    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.evaluation.evaluate import evaluate
    from ml_expert.tools.training.config import TrainConfig
    from ml_expert.tools.training.train import train

    def ok(status: Any) -> dict[str, Any]:
        assert status.status == "succeeded", status.error
        return status.result

    digits, rng, size = load_digits(), np.random.default_rng(draw), LAYOUTS[name]
    low = digits.target < 5
    base_X = np.concatenate([layout(digits.images[low], rng, size) for _ in range(2)])
    np.savez(ws.root / f"{name}{draw}_low.npz", X=base_X, y=np.tile(digits.target[low], 2))
    np.savez(ws.root / f"{name}{draw}_high.npz", X=layout(digits.images[~low], rng, size), y=digits.target[~low])
    base_run = prepare_data(ws, path=f"{name}{draw}_low.npz", target="digit", random_state=draw).run_id
    base = ok(train(ws, base_run, "cnn", config=TrainConfig(epochs=10), wait_seconds=900))
    few = prepare_data(ws, path=f"{name}{draw}_high.npz", target="digit", split=(0.05, 0.05, 0.9), random_state=draw)
    config = TrainConfig(epochs=epochs)
    models = {
        "scratch": ok(train(ws, few.run_id, "cnn", config=config, wait_seconds=900)),
        "frozen_base_new_head": ok(
            train(ws, few.run_id, "cnn", config=config, base_model=base["model_id"], wait_seconds=900)
        ),
        "fine_tune_top_conv": ok(
            train(
                ws, few.run_id, "cnn", config=config, base_model=base["model_id"], fine_tune_layers=1, wait_seconds=900
            )
        ),
    }
    ids = [m["model_id"] for m in models.values()]
    evaluations = ok(evaluate(ws, few.run_id, model_ids=ids, wait_seconds=900))["evaluations"]
    accuracy = {e["model_id"]: e["test_metrics"]["accuracy"] for e in evaluations}
    row = {k: round(accuracy[m["model_id"]], 4) for k, m in models.items()}
    row |= {"base_val_accuracy": round(base["val_metrics"]["accuracy"], 4), "train_images": few.splits["train"]}
    row["linear_probe"] = linear_probe(ws, few.run_id, base["artifacts"]["model"])
    print(name, draw, row, flush=True)
    return row


def main() -> None:
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.workspace import Workspace

    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    ws = Workspace(Path(tempfile.mkdtemp(prefix="ml-expert-transfer-bench-")))
    ws.jobs = JobManager(ws).start()
    res: dict[str, Any] = {}
    try:
        for name in LAYOUTS:
            rows = [one_draw(ws, name, draw, args.epochs) for draw in range(args.draws)]
            methods = ("scratch", "frozen_base_new_head", "fine_tune_top_conv")
            mean = {m: round(float(np.mean([r[m] for r in rows])), 4) for m in methods}
            gain = {m: [round(r[m] - r["scratch"], 4) for r in rows] for m in methods[1:]}
            probe = {k: round(float(np.mean([r["linear_probe"][k] for r in rows])), 4) for k in rows[0]["linear_probe"]}
            res[name] = {
                "draws": rows,
                "mean_test_accuracy": mean,
                "transfer_minus_scratch": gain,
                "mean_linear_probe": probe,
            }
    finally:
        ws.jobs.stop()
    res["meta"] = {"python": platform.python_version(), "when": time.ctime(), "epochs": args.epochs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer_bench.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "meta"}, indent=2))


if __name__ == "__main__":
    main()
