"""The distribution helper: which strategy it picks, and a real two-replica training step."""

import json
import os
import subprocess
import sys

import pytest

from helpers import distribute

# Runs in a fresh interpreter: logical devices must be configured before TensorFlow
# initialises its runtime, which the test process has long done.
TWO_REPLICAS = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras
from helpers import distribute, keras_metrics, metrics

PER_REPLICA = 4
rng = np.random.default_rng(0)
x = rng.random((8, 16, 16, 3)).astype("float32")
y = rng.integers(0, 3, (8, 16, 16))


def build():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(3, 1, activation="softmax", dtype="float32"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy",
                  metrics=[keras_metrics.mean_iou_metric(3)])
    return model


def one_step(strategy, batch):
    with strategy.scope():
        model = build()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    history = model.fit(data, epochs=1, verbose=0)
    return model, {k: float(v[-1]) for k, v in history.history.items()}


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
batch_m = distribute.global_batch_size(PER_REPLICA, mirrored)  # 4 per replica, 8 in all
model_m, logs_m = one_step(mirrored, batch_m)
# One replica, the same initial weights, and the same 8 examples in one step.
model_1, logs_1 = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"), batch_m)
init = build().get_weights()
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "global_batch": batch_m,
    "logs_single": logs_1, "logs_mirrored": logs_m,
    "moved": max(float(np.abs(a - b).max()) for a, b in zip(model_1.get_weights(), init)),
    "diff": max(float(np.abs(a - b).max()) for a, b in
                zip(model_1.get_weights(), model_m.get_weights())),
}))
"""


def accelerators():
    """Return how many GPUs and TPUs this machine shows, e.g. {"GPU": 0, "TPU": 0}."""
    import tensorflow as tf

    return {kind: len(tf.config.list_physical_devices(kind)) for kind in ("GPU", "TPU")}


@pytest.fixture
def restore_dtype_policy():
    """Put back the global Keras dtype policy a test may switch to mixed precision."""
    import keras

    previous = keras.config.dtype_policy()
    try:
        yield previous
    finally:
        keras.config.set_dtype_policy(previous)


def test_global_batch_size_scales_with_the_replicas():
    import tensorflow as tf

    class FourReplicas:
        num_replicas_in_sync = 4

    assert distribute.global_batch_size(8, FourReplicas()) == 32
    assert distribute.global_batch_size(8, tf.distribute.get_strategy()) == 8  # one replica


def test_get_strategy_fits_this_machine(capsys):
    import tensorflow as tf

    found = accelerators()
    strategy = distribute.get_strategy()
    out = capsys.readouterr().out
    if found["TPU"]:
        assert isinstance(strategy, tf.distribute.TPUStrategy)
        assert out.startswith("Distribution: TPUStrategy (TPU), ")
    elif found["GPU"] > 1:
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert out == (f"Distribution: MirroredStrategy (GPUs), {found['GPU']} replica(s) "
                       "in sync\n")
    else:  # one GPU or none: no distribution
        assert strategy is tf.distribute.get_strategy()
        device = "GPU" if found["GPU"] else "CPU"
        assert out == f"Distribution: default strategy ({device}), 1 replica(s) in sync\n"


def test_get_strategy_mirrors_across_several_gpus(monkeypatch, capsys):
    import tensorflow as tf

    class FakeMirrored:
        num_replicas_in_sync = 2

    monkeypatch.setattr(distribute, "_tpu_resolver", lambda: None)  # as if on a TPU-less machine
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/gpu:0", "/gpu:1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", FakeMirrored)
    assert isinstance(distribute.get_strategy(), FakeMirrored)
    assert "MirroredStrategy (GPUs), 2 replica(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_two_replica_mirrored_step_matches_a_single_replica_step():
    # Global batch 8 (4 per replica) in one step must update the weights as one replica
    # does with the same 8 examples: Keras scales each replica's loss by 1/replicas and
    # the gradients are summed across replicas.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["global_batch"] == 8
    assert result["moved"] > 1e-3  # the step really changed the weights
    assert result["diff"] < 1e-5, result
    for name in ("loss", "mean_iou"):
        assert result["logs_mirrored"][name] == pytest.approx(result["logs_single"][name], abs=1e-5)


def test_mixed_precision_is_on_only_with_an_accelerator(restore_dtype_policy):
    import keras

    found = accelerators()
    turned_on = distribute.use_mixed_precision(distribute.get_strategy(verbose=False))
    policy = keras.config.dtype_policy().name
    if found["TPU"]:
        assert (turned_on, policy) == (True, "mixed_bfloat16")
    elif found["GPU"]:
        assert (turned_on, policy) == (True, "mixed_float16")
    else:  # on the CPU it leaves the policy alone
        assert turned_on is False and policy == restore_dtype_policy.name


def test_mixed_precision_uses_float16_on_a_gpu_and_bfloat16_on_a_tpu(monkeypatch,
                                                                    restore_dtype_policy):
    import keras
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/gpu:0"] if kind == "GPU" else [])
    assert distribute.use_mixed_precision(tf.distribute.get_strategy()) is True
    assert keras.config.dtype_policy().name == "mixed_float16"

    class FakeTPUStrategy:
        pass

    monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeTPUStrategy)
    assert distribute.use_mixed_precision(FakeTPUStrategy()) is True
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
