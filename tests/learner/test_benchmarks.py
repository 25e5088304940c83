"""Smoke tests of the benchmark scripts' code paths at toy sizes (the figures are in benchmarks/)."""

import sys

import numpy as np
import pytest

from benchmarks import common, fcn_family, iterators, mask_rcnn, memory, notebooks, pipeline, training

pytestmark = pytest.mark.slow  # each runs a benchmark's code path: seconds, not milliseconds


def test_pipeline_benchmark_compares_like_for_like_batches(capsys, monkeypatch):
    from helpers import datasets

    decodes = []  # load_pair is traced once for each time the PNGs are decoded
    original = datasets.load_pair
    monkeypatch.setattr(datasets, "load_pair", lambda *a: decodes.append(1) or original(*a))
    with common.scratch_dir() as folder:
        pairs = common.camvid_frames(folder, 3, height=64, width=96)
        course = next(iter(pipeline.course_pipeline(pairs, (32, 32), 2)))
        ours = next(iter(pipeline.our_pipeline(pairs, (32, 32), 2)))
        decodes.clear()
        results = pipeline.measure(pairs, (32, 32), 2, epochs=2, cache_dir=folder / "frames")
        saved = list((folder / "frames").glob("frames-32x32-*.npz"))
    assert len(saved) == 1
    assert len(decodes) == 1  # the first run decoded; the later run read the saved frames
    assert set(results["ours"]) == set(results["course"]) == {"first", "rerun", "later", "overall"}
    assert course[0].shape == ours[0].shape == (2, 32, 32, 3)
    assert course[1].shape == (2, 32, 32, 12) and ours[1].shape == (2, 32, 32)
    assert not folder.exists()
    assert pipeline.median_results([{"a": {"x": 1.0}}, {"a": {"x": 5.0}}, {"a": {"x": 2.0}}]) == {"a": {"x": 2.0}}
    text = pipeline.report(results, 3, (32, 32), 2, 2)
    assert "ratio" in text and "Target ours >= 3x" in text and "any later run" in text


def test_training_benchmark_steps_both_configurations():
    results = training.child(["course", "ours"], (32, 32), 2, steps=1, warmup=1, fc_filters=8)
    assert set(results) == {"course", "ours"}
    assert all(r["images_per_s"] > 0 and r["parameters"] == results["course"]["parameters"]
               for r in results.values())
    assert results["ours"]["jit_compile"] is False  # "auto" means no XLA on the CPU
    assert "Target ours >= 1.0x the course on CPU" in training.report(results, (32, 32), 8, 1)


def test_memory_benchmark_uses_the_notebooks_full_mode_defaults():
    full = common.notebook_parameters("01_fcn8_camvid.ipynb", quick=False)
    assert full["IMAGE_SIZE"] == (192, 256) and full["FC_FILTERS"] == 4096
    assert full["EPOCHS"] <= 170 // 3  # the budget: a third of the course's epochs
    assert common.notebook_parameters("02_unet_pets.ipynb", quick=False)["EPOCHS"] < 10
    result = memory.child("01", toy=True)
    assert result["peak_rss_mib"] >= result["baseline_rss_mib"] > 0
    assert "peak RSS MiB" in memory.report({"01": result})


def test_notebook_benchmark_reads_times_and_memory(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase file="tests/notebooks/test_lesson_01.py" name="run" time="150.5"/>'
        '<testcase file="tests/notebooks/test_lesson_01_code.py" name="a" time="2.0"/>'
        '<testcase file="tests/test_a.py" name="t" time="0.25"/>'
        '<testcase file="tests/test_a.py" name="u" time="0.5"/>'
        '</testsuite></testsuites>')
    per_file = notebooks.times_by_file(junit)
    assert per_file == {"tests/notebooks/test_lesson_01.py": 150.5,
                        "tests/notebooks/test_lesson_01_code.py": 2.0, "tests/test_a.py": 0.75}
    code, wall, largest, _ = notebooks.run_measured(
        [sys.executable, "-c", "b = bytearray(50 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert code == 0 and wall > 0 and largest >= 50
    text = notebooks.report(0, 300, 1, 1, per_file)
    assert any(line.split()[:3] == ["test_lesson_01.py", "150", "ok"] for line in text.splitlines())
    assert "met; suite <= 6 min: met" in text
    text = notebooks.report(0, 400, 1, 1, {**per_file, "tests/notebooks/test_lesson_04.py": 200.0})
    assert "NOT met: tests/notebooks/test_lesson_04.py" in text and "OVER the 6 min" in text


def test_mask_rcnn_benchmark_scores_the_shipped_weights(capsys):
    import json

    assert mask_rcnn.main(["--scenes", "3"]) == 0
    out = capsys.readouterr().out
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["scenes"] == 3 and scores["instances"] > 3 and 0 < scores["AP"] <= scores["AP50"] <= 1
    assert "AP50" in out and "training time recorded with the weights" in out


def test_fcn_family_benchmark_trains_the_notebooks_fcn_and_compares_the_starts(small_camvid_zip):
    results = fcn_family.measure([0], ["32s"], ["default"], url=small_camvid_zip.as_uri(),
                                 overrides={"IMAGE_SIZE": (32, 32), "FC_FILTERS": 8, "EPOCHS": 1})
    assert [(r["variant"], r["init"], r["seed"]) for r in results] == [("32s", "default", 0)]
    assert 0 <= results[0]["mean_iou"] <= 1 and set(results[0]["thin_iou"]) == set(fcn_family.THIN)
    # The report pairs the starts seed by seed: bilinear better in 1 of 2, +0.05 on average.
    made_up = [dict(results[0], seed=seed, init=init, mean_iou=iou)
               for seed, init, iou in [(0, "bilinear", 0.5), (0, "default", 0.3),
                                       (1, "bilinear", 0.2), (1, "default", 0.3)]]
    text = fcn_family.report(made_up)
    assert "FCN-32s: bilinear better in 1 of 2 seeds, mean IoU +0.050 on average" in text
    assert "0.200-0.500" in text and "0.300-0.300" in text  # each start's range over the seeds


def test_iterator_benchmark_trains_alike_with_the_autotuner_on_and_off():
    from keras import layers

    from benchmarks import m2nist_recipe
    from helpers import m2nist

    rng = np.random.default_rng(0)
    splits = {name: (rng.integers(0, 256, (n, *m2nist.IMAGE_SHAPE), dtype=np.uint8),
                     rng.integers(0, m2nist.N_CLASSES, (n, *m2nist.IMAGE_SHAPE), dtype=np.uint8))
              for name, n in (("train", 32), ("validation", 16), ("test", 8))}
    # The notebook's weights, and a one-layer model in place of its FCN-8.
    functions = dict(m2nist_recipe.notebook_functions(), encoder=lambda image: (image,) * 3,
                     fcn8_decoder=lambda pool3, pool4, pool5, n: layers.Conv2D(n, 3, padding="same",
                                                                               activation="softmax")(pool3))
    results = iterators.measure(epochs=2, train_count=32, splits=splits, functions=functions,
                                warm_up=False)
    assert list(results) == [True, False]  # the autotuner on, then off
    for seconds, total, losses in results.values():
        assert len(seconds) == len(losses) == 2 and 0 < sum(seconds) <= total
    # The autotuner changes when iterators are freed, never what the model sees.
    assert results[True][2] == results[False][2]
    text = iterators.report(results)
    assert "Losses per epoch identical" in text and "on (TensorFlow's default)" in text
