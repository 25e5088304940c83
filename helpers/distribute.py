"""Pick the tf.distribute strategy for the machine a notebook runs on.

- A TPU (Colab, Kaggle): ``TPUStrategy``.
- More than one GPU: ``MirroredStrategy`` (one replica per GPU, gradients all-reduced).
- Otherwise (one GPU, or the CPU): the default strategy, which does no distribution.

Build *and* compile the model under ``strategy.scope()`` and feed batches of
``global_batch_size(per_replica_batch, strategy)``: Keras splits each global batch across the
replicas, so every replica still sees ``per_replica_batch`` examples per step.

Taught in notebook 1; notebooks 2 and 4 train under it the same way.
"""

import os
from pathlib import Path

import keras
import tensorflow as tf

_TPU = {}  # the connected TPU resolver: initialising the TPU system twice wipes its memory


def _tpu_attached():
    """Return whether this machine looks like a TPU VM (Kaggle, current Colab TPU runtimes)."""
    return (any(Path("/dev").glob("accel*"))
            or bool(os.environ.get("TPU_ACCELERATOR_TYPE") or os.environ.get("TPU_NAME")))


def _tpu_resolver():
    """Return a connected TPU cluster resolver, or None when no TPU is reachable."""
    if "resolver" in _TPU:
        return _TPU["resolver"]
    _TPU["resolver"] = None
    # A TPU reached over the network (older Colab runtimes: found without a name), or one
    # attached to this VM ("local"), tried only where one is likely: connecting changes TF's state.
    for name in (None, "local"):
        if name == "local" and not _tpu_attached():
            continue
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception:  # no TPU here (ValueError), or it failed to start: run without it
            continue
        _TPU["resolver"] = resolver
        return resolver
    return None


def get_strategy(verbose=True):
    """Return TPUStrategy on a TPU, MirroredStrategy on several GPUs, else the default."""
    resolver = _tpu_resolver()
    if resolver is not None:
        strategy = tf.distribute.TPUStrategy(resolver)
        kind = "TPUStrategy (TPU)"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
        kind = "MirroredStrategy (GPUs)"
    else:
        strategy = tf.distribute.get_strategy()
        device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        kind = f"default strategy ({device})"
    if verbose:
        print(f"Distribution: {kind}, {strategy.num_replicas_in_sync} replica(s) in sync")
    return strategy


def global_batch_size(per_replica_batch, strategy):
    """Return the global batch size: the per-replica batch times the number of replicas."""
    return int(per_replica_batch) * strategy.num_replicas_in_sync


def use_mixed_precision(strategy=None):
    """Turn on 16-bit compute with float32 weights on a GPU or TPU; return whether it did."""
    if isinstance(strategy, tf.distribute.TPUStrategy):  # TPUs compute in bfloat16
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    elif tf.config.list_logical_devices("GPU"):
        # Keras wraps the optimiser in a LossScaleOptimizer, so small float16 gradients survive.
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        return False  # on CPUs 16-bit compute is rarely faster and can lose accuracy
    return True
