"""Distributed training on TensorFlow's own engine (`tf.distribute`), the seed's step 3.3.

- `none`: the default strategy (one device).
- `mirrored`: `tf.distribute.MirroredStrategy` over all local GPUs, or over N logical CPU devices
  when `ML_EXPERT_CPU_REPLICAS=N` is set (for testing on a machine without GPUs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ml_expert.tools.errors import InvalidInputError


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
    else:
        raise InvalidInputError(
            "distribution='multi_worker' runs through `ml-expert worker-train` on each machine (see README: "
            "Distributed training); the train tool itself supports 'none' and 'mirrored'."
        )
    info = {
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": list(strategy.extended.worker_devices),
    }
    with strategy.scope():
        yield info
