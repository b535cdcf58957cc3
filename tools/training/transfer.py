"""Transfer learning and fine-tuning: reuse a trained Keras network for a new task.

The standard two-stage recipe: the base network (a model of this workspace, or a `.keras` file
inside it, loaded with `safe_mode=True`) minus its output head becomes a frozen feature extractor;
a new head is trained for the new task; then, optionally, the top N layers of the base are
unfrozen and fine-tuned with a ten times lower learning rate. With freeze=False the base trains
with the head from the start (one stage). Nothing is downloaded.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.keras_networks import compile_model, output_head
from ml_expert.tools.workspace import Workspace, is_id

np = lazy_import("numpy")  # loads on first use, not at server start

HEAD_LAYERS = ("output", "output_scaled")


def fine_tune_epochs(epochs: int) -> int:
    """Epochs of the fine-tuning stage after the head's `epochs`: half as many, at least 5 (a lower learning rate
    needs them), never more than the head's own (epochs=3 ran 5 more)."""
    return min(epochs, max(5, epochs // 2))


def resolve_base_model(ws: Workspace, base_model: str) -> Path:
    """A model id of this workspace (any run) or a .keras file inside the workspace."""
    if base_model.startswith("mdl_"):
        if not is_id(base_model, "mdl"):
            raise InvalidInputError(
                f"base_model {base_model[:80]!r} is not a model id (mdl_ and 8 to 32 hex digits, e.g. 'mdl_09c1e2aa') "
                "nor a .keras file. Pass a model_id from train, or a .keras file path inside the workspace."
            )
        found = sorted(ws.home.glob(f"runs/*/models/{base_model}/model.keras"))
        if not found:
            raise NotFoundError(
                f"No Keras model {base_model!r} in this workspace (scikit-learn models cannot be "
                "a base). Pass a model_id from train, or a .keras file path."
            )
        return found[0]
    if not Path(base_model).suffix:  # "imagenet", "resnet50": a name from a model hub
        raise InvalidInputError(
            f"base_model {base_model[:80]!r} is neither a model id nor a .keras file. ml-expert never downloads "
            "weights (it runs offline): pass a model_id from train, or a .keras file you saved inside the workspace "
            "(e.g. keras.applications.MobileNetV2(weights=...) saved with model.save('base.keras'))."
        )
    path = ws.resolve_path(base_model, kind="base_model")
    if path.suffix != ".keras":
        raise InvalidInputError(f"base_model must be a model_id or a .keras file; received {base_model!r}.")
    return path


def stored_input_shape(path: Path) -> list[int | None] | None:
    """The input shape recorded in a .keras file's config.json (read without TensorFlow), or None if absent."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InvalidInputError(
            f"{path.name} is not a readable Keras model file ({exc}). A base model is a .keras file written by "
            "model.save('name.keras') (Keras 3), or a model_id from train."
        ) from exc
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer" and layer.get("config", {}).get("batch_shape"):
            return list(layer["config"]["batch_shape"][1:])
    shape = (config.get("build_config") or {}).get("input_shape")
    return list(shape[1:]) if shape else None


def check_input_shape(expected: list[int | None] | tuple[int | None, ...], got: list[int] | tuple[int, ...]) -> None:
    """The base's input shape must match the run's data (None = any size along that axis)."""
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got, strict=False)):
        raise InvalidInputError(
            f"The base model takes inputs of shape {list(expected)}; this run's data is {list(got)}. "
            "Prepare the data with the same shape (image_size / lookback / the same feature columns)."
        )


def feature_layer(base: Any) -> Any:
    """Where the base's general features end: before its classifier block (trailing Dense/Dropout layers)
    when the network has a feature body (conv, recurrent, attention), else just before the output head."""
    layers = [layer for layer in base.layers if layer.name not in HEAD_LAYERS]
    head_types = ("Dense", "Dropout", "Activation", "BatchNormalization")
    cut = len(layers)
    while cut > 1 and type(layers[cut - 1]).__name__ in head_types:
        cut -= 1
    body_is_features = cut > 1 and type(layers[cut - 1]).__name__ not in ("InputLayer",)
    return layers[cut - 1] if body_is_features else layers[-1]


def build_transfer_model(
    path: Path, task: str, n_classes: int, config: TrainConfig, data: dict[str, Any], freeze: bool = True
) -> Any:
    """The base (without its head; frozen unless freeze=False) + a new head for this task."""
    import keras

    base = keras.saving.load_model(path, safe_mode=True, compile=False)
    expected = tuple(base.inputs[0].shape[1:])
    check_input_shape(expected, data["X_train"].shape[1:])
    extractor = keras.Model(base.inputs, feature_layer(base).output, name="base")
    extractor.trainable = not freeze
    inputs = keras.Input(shape=expected, dtype=base.inputs[0].dtype, name="input")
    x = extractor(inputs, training=False)  # batch statistics stay the base's, even when its weights train
    x = keras.layers.Dense(128, activation=config.activation, name="new_head")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    y = data["y_train"]
    y_mean, y_std = (float(np.mean(y)), float(np.std(y) or 1.0)) if task == "regression" else (0.0, 1.0)
    return keras.Model(inputs, output_head(x, task, n_classes, y_mean, y_std), name="transfer")


def fine_tune(
    model: Any,
    layers: int,
    task: str,
    config: TrainConfig,
    data: dict[str, Any],
    class_weight: Any,
    callbacks: list[Any],
    done_epochs: int,
) -> None:
    """Stage 2: unfreeze the top `layers` layers of the base and train on with learning_rate / 10."""
    base = model.get_layer("base")
    base.trainable = True
    trainable = [layer for layer in base.layers if layer.weights]
    for layer in trainable[: max(0, len(trainable) - layers)]:
        layer.trainable = False
    for layer in base.layers:  # batch statistics stay frozen while fine-tuning
        if "batch_normalization" in layer.name:
            layer.trainable = False
    compile_model(model, task, config.model_copy(update={"learning_rate": config.learning_rate / 10}))
    extra = fine_tune_epochs(config.epochs)
    model.fit(
        data["X_train"],
        data["y_train"],
        validation_data=(data["X_val"], data["y_val"]),
        initial_epoch=done_epochs,
        epochs=done_epochs + extra,
        batch_size=config.batch_size,
        class_weight=class_weight,
        verbose=0,
        shuffle=True,
        callbacks=callbacks,
    )


def summary(model: Any, head_epochs: int, total_epochs: int) -> dict[str, Any]:
    """What was reused, which base layers stayed frozen or were trained, and the epochs of each stage."""
    base = model.get_layer("base")
    with_weights = [layer for layer in base.layers if layer.weights]
    return {
        "reused_up_to": base.layers[-1].name,
        "frozen_layers": [layer.name for layer in with_weights if not layer.trainable],
        "fine_tuned_layers": [layer.name for layer in with_weights if layer.trainable],
        "head_epochs": head_epochs,
        "fine_tune_epochs": total_epochs - head_epochs,
    }
