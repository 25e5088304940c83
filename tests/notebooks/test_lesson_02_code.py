"""Notebook 2 writes its own preprocessing, flip, pipeline and Dice loss (the lesson); they must
give exactly what the course's helpers give, which the benchmarks and the other notebooks use."""

import ast

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from helpers import datasets, keras_metrics, synthetic
from maintainer import notebook_code

NOTEBOOK = "02_unet_pets.ipynb"
SIGNATURE = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
             "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8)}


def notebook_functions(**settings):
    """Define the notebook's own functions (only their ``def``s, not the rest of their cells)
    in a namespace holding the notebook's imports and ``settings`` (its parameters)."""
    namespace = {"tf": tf, "ops": ops, "keras": keras, "np": np, "datasets": datasets, **settings}
    for name, source in notebook_code.function_cells(notebook_code.read_notebook(NOTEBOOK)).items():
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
        exec(compile(ast.Module([node], type_ignores=[]), f"{NOTEBOOK}:{name}", "exec"), namespace)
    return namespace


def pet_split(seed, n):
    """A split of ``n`` generated pets elements, in tfds' format (images of different sizes)."""
    examples = [{k: e[k] for k in SIGNATURE} for e in synthetic.pet_examples(seed, n)]
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=SIGNATURE)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_the_notebooks_preprocess_is_the_course_preprocess_pet(size):
    preprocess = notebook_functions(IMAGE_SIZE=size)["preprocess"]
    for element in pet_split(3, 4):
        image, mask = preprocess(element)
        course_image, course_mask = datasets.preprocess_pet(element, size)
        np.testing.assert_array_equal(image, course_image)
        np.testing.assert_array_equal(mask, course_mask)
        assert mask.dtype == course_mask.dtype == tf.int32


def test_the_notebooks_flip_together_is_the_course_random_flip():
    flip_together = notebook_functions()["flip_together"]
    image = tf.random.stateless_uniform((6, 5, 3), seed=[0, 0])
    mask = tf.reshape(tf.range(30) % 3, (6, 5))
    flipped = set()
    for seed in range(8):
        ours, course = flip_together(image, mask, [42, seed]), datasets.random_flip(image, mask, [42, seed])
        for a, b in zip(ours, course):
            np.testing.assert_array_equal(a, b)
        flipped.add(not np.array_equal(ours[1], mask))
    assert flipped == {True, False}  # both answers occur


def test_the_notebooks_pipeline_gives_the_course_pipelines_batches():
    # The benchmark of the two losses trains through datasets.make_pets_dataset: its figures
    # are the notebook's only if the batches are the same, shuffled and flipped alike.
    size, batch, seed = (32, 32), 4, 42
    functions = notebook_functions(IMAGE_SIZE=size, SEED=seed, GLOBAL_BATCH_SIZE=batch)
    split = pet_split(1, 10)
    keras.utils.set_random_seed(seed)
    ours = list(functions["make_pipeline"](split, shuffle=True, augment=True))
    keras.utils.set_random_seed(seed)
    course = list(datasets.make_pets_dataset(split, size, batch, shuffle=True, augment=True, seed=seed))
    assert len(ours) == len(course) == 3
    for (image, mask), (course_image, course_mask) in zip(ours, course):
        assert image.dtype == tf.float32 and mask.dtype == tf.int32
        np.testing.assert_array_equal(image, course_image)
        np.testing.assert_array_equal(mask, course_mask)
    assert not np.array_equal(ours[0][1], list(functions["make_pipeline"](split))[0][1])  # shuffled


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_the_notebooks_soft_dice_loss_is_the_course_dice_loss(smooth):
    soft_dice_loss = notebook_functions()["soft_dice_loss"]
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (4, 8, 8))
    probabilities = keras.activations.softmax(rng.normal(size=(4, 8, 8, 3)).astype(np.float32))
    expected = float(keras_metrics.dice_loss(truth, probabilities, smooth=smooth))
    assert float(soft_dice_loss(truth, probabilities, smooth=smooth)) == pytest.approx(expected, abs=1e-6)
