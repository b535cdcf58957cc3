"""Distributed training on TensorFlow's own engine (`tf.distribute`), the seed's step 3.3.

- `none`: the default strategy (one device).
- `mirrored`: `tf.distribute.MirroredStrategy` over all local GPUs, or over N logical CPU devices
  when `ML_EXPERT_CPU_REPLICAS=N` is set (for testing on a machine without GPUs).
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`, one process per
  machine, with a custom training loop (`fit_multi_worker`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ml_expert.memory.errors import InvalidInputError, TrainingError
from ml_expert.tools.core.tasks import is_classification


def _logical_cpus(n: int) -> list[str]:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    return [d.name for d in tf.config.list_logical_devices("CPU")]


@contextmanager
def strategy_scope(kind: str) -> Iterator[dict[str, Any]]:
    """Build and compile the model inside this scope; yields what the result reports (strategy, replicas)."""
    if kind == "none":
        yield {}
        return
    import tensorflow as tf

    if kind == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        devices = None
        if not gpus and int(os.environ.get("ML_EXPERT_CPU_REPLICAS", "0")) > 1:
            devices = _logical_cpus(int(os.environ["ML_EXPERT_CPU_REPLICAS"]))
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:  # multi_worker trains through fit_multi_worker (a custom loop), not inside this scope
        yield {}
        return
    info = {
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": list(strategy.extended.worker_devices),
    }
    with strategy.scope():
        yield info


def cluster_spec() -> dict[str, Any]:
    """TF_CONFIG as a dict, or a clear error saying how to set it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise InvalidInputError(
            "distribution='multi_worker' needs TF_CONFIG on every machine, e.g. "
            '{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}. '
            "Start the other workers with `ml-expert worker-train RUN_ID` (see docs/distributed.md)."
        )
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        index = int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"TF_CONFIG is not valid: {exc}. Expected cluster.worker and task.index.") from exc
    return {"workers": workers, "index": index, "chief": spec["task"].get("type", "worker") == "chief" or index == 0}


def _train_step(strategy: Any, model: Any, optimizer: Any, loss_fn: Any, global_batch: int) -> Any:
    """One synchronous step on every replica: the loss averaged over the global batch, gradients all-reduced."""
    import tensorflow as tf

    @tf.function
    def step(xb: Any, yb: Any, wb: Any) -> Any:
        def replica(xr: Any, yr: Any, wr: Any) -> Any:
            with tf.GradientTape() as tape:
                per_example = loss_fn(yr, model(xr, training=True)) * wr  # class weights, as fit's class_weight
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(xb, yb, wb)), axis=None)

    return step


def fit_multi_worker(
    build: Callable[[], Any],
    task: str,
    config: Any,
    data: dict[str, Any],
    on_epoch: Any,
    timeout_seconds: int = 120,
    class_weight: dict[int, float] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Data-parallel training across machines: MultiWorkerMirroredStrategy with a custom loop.

    Keras 3's `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so each replica
    computes its loss with `tf.nn.compute_average_loss` over the global batch inside `strategy.run`.
    Collective operations time out after `timeout_seconds`, so a dead worker fails the run instead of
    hanging it.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    cluster = cluster_spec()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    classify = is_classification(task)
    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.get(
            {"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}}
        )
        loss_class = keras.losses.SparseCategoricalCrossentropy if classify else keras.losses.MeanSquaredError
        loss_fn = loss_class(reduction=None)
    X, y = data["X_train"].astype(np.float32), data["y_train"]
    weights = np.ones(len(y), np.float32)
    if class_weight:
        weights = np.asarray([class_weight.get(int(c), 1.0) for c in range(int(y.max()) + 1)], np.float32)[y]
    dataset = tf.data.Dataset.from_tensor_slices((X, y, weights)).shuffle(len(X), seed=config.seed).batch(global_batch)
    dist = strategy.experimental_distribute_dataset(dataset)
    step = _train_step(strategy, model, optimizer, loss_fn, global_batch)
    for epoch in range(config.epochs):
        total, batches = 0.0, 0
        try:
            for xb, yb, wb in dist:
                total += float(step(xb, yb, wb))
                batches += 1
            val = model.predict(data["X_val"], verbose=0)  # collective too: inside the same guard
            train_pred = model.predict(X, verbose=0) if classify else None
        except tf.errors.OpError as exc:
            raise TrainingError(
                f"Multi-worker training lost a worker at epoch {epoch + 1} ({type(exc).__name__}). Check that "
                "every worker in TF_CONFIG is running and reachable, then train again."
            ) from exc
        logs = {"loss": total / max(batches, 1), "val_loss": float(np.mean(loss_fn(data["y_val"], val)))}
        if classify:
            logs["accuracy"] = float(np.mean(train_pred.argmax(1) == y))
            logs["val_accuracy"] = float(np.mean(val.argmax(1) == data["y_val"]))
        on_epoch(epoch, logs)
    info = {
        "strategy": "MultiWorkerMirroredStrategy",
        "note": "every epoch runs: the multi-worker loop has no early stopping or learning-rate schedule",
        "replicas": strategy.num_replicas_in_sync,
        "workers": len(cluster["workers"]),
        "task_index": cluster["index"],
        "chief": cluster["chief"],
        "global_batch_size": global_batch,
    }
    plain = build()  # a copy outside the strategy: predicting or saving it needs no other worker
    plain.set_weights(model.get_weights())
    return plain, info
