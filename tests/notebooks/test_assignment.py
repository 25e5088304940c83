"""The assignment: one solution notebook, a generated student notebook, checks that say what is wrong.

Most of this file is the plausible wrong answers a learner writes, each as a changed copy of
the solution's function: every check must fail each of them with a message that names the
mistake, and pass the right answers written another way.
"""

import ast
import re
import sys
import textwrap

import keras
import nbformat
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from helpers import assignment, keras_metrics, m2nist, metrics
from maintainer import notebook_code, student_notebook
from maintainer.student_notebook import END, NOT_IMPLEMENTED, SOLUTION, START, STUDENT, YOUR_CODE


@pytest.fixture(scope="module")
def solution():
    return nbformat.read(SOLUTION, as_version=4)


@pytest.fixture(scope="module")
def student():
    return nbformat.read(STUDENT, as_version=4)


def exercise_blocks(nb):
    """Return the source lines between the code markers of each exercise cell."""
    blocks = []
    for cell in nb.cells:
        if cell.cell_type == "code" and START in cell.source:
            lines = cell.source.split("\n")
            blocks += ["\n".join(lines[s:e - 1]) for s, e in notebook_code.marked_blocks(cell.source)]
    return blocks


# --- The student notebook ------------------------------------------------------------------

def test_the_committed_student_notebook_is_what_the_generator_writes(solution):
    expected = student_notebook.render(student_notebook.student_version(solution))
    assert STUDENT.read_text() == expected, "run: python -m maintainer.student_notebook"
    assert student_notebook.main(["--check"]) == 0


def test_the_assignment_has_seven_exercises(solution, student):
    assert len(exercise_blocks(solution)) == len(exercise_blocks(student)) == 7


def test_student_exercises_hold_one_placeholder_each_whatever_the_answers_length(solution, student):
    blocks = [[line.strip() for line in b.split("\n")] for b in exercise_blocks(student)]
    for block in blocks:
        assert len(block) == 2 and block[0] == YOUR_CODE, block
        assert block[1] == NOT_IMPLEMENTED or re.fullmatch(r"(\w+ = )+None", block[1]), block
    # Solutions of 1 to 9 lines all become 2 placeholder lines: their length does not show.
    assert len({b.count("\n") for b in exercise_blocks(solution)}) > 2


def test_no_solution_code_appears_anywhere_in_the_student_notebook(solution, student):
    student_text = "\n".join(c.source for c in student.cells)
    squeezed = re.sub(r"\s+", "", student_text)
    student_lines = {line.strip() for line in student_text.split("\n")}
    for block in exercise_blocks(solution):
        for line in block.split("\n"):  # code and comments alike (a comment can give it away)
            assert not line.strip() or line.strip() not in student_lines, f"solution line leaked: {line}"
        for node in ast.parse(textwrap.dedent(block)).body:
            code = re.sub(r"\s+", "", ast.unparse(node))
            assert code not in squeezed, f"solution code leaked: {ast.unparse(node)}"


def test_solution_only_cells_and_the_solution_title_stay_out(solution, student):
    assert any("solution-only" in c.metadata.get("tags", []) for c in solution.cells)
    assert not any("solution-only" in c.metadata.get("tags", []) for c in student.cells)
    assert "(solution)" in solution.cells[0].source and "(solution)" not in student.cells[0].source
    assert "solutions/" not in student.cells[0].source
    assert all("nbval-check-output" not in c.metadata.get("tags", []) and not c.get("outputs")
               for c in student.cells)


def test_the_generator_raises_in_functions_and_assigns_none_outside_them():
    cell = "\n".join([
        "def f(x):",
        "    " + START,
        "    # a comment that would give the answer away",
        "    y = layers.Dense(3,",
        "                     activation='relu')(x)",
        "    for _ in range(2):",
        "        y = y + 1",
        "    " + END,
        "    return y",
        "with scope():",
        "    " + START,
        "    loss, (opt, metric) = 'mse', ('adam', 'mae')",
        "    model.compile(optimizer=opt, loss=loss)",
        "    loss = loss",
        "    " + END,
    ])
    assert student_notebook.blank_exercises(cell).split("\n") == [
        "def f(x):", "    " + START, "    " + YOUR_CODE, "    " + NOT_IMPLEMENTED, "    " + END,
        "    return y", "with scope():", "    " + START, "    " + YOUR_CODE,
        "    loss = opt = metric = None", "    " + END]


@pytest.mark.parametrize("cell, message", [
    (f"{START}\nx = 1\n", "unbalanced"),
    (f"{START}\n# nothing\n{END}", "no solution code"),
    (f"{START}\nprint(1)\n{END}", "must assign the names"),
    (f"for i in range(3):\n    {START}\n    x = i\n    {END}", "around whole statements"),
])
def test_the_generator_refuses_what_it_cannot_blank(cell, message):
    with pytest.raises(ValueError, match=message):
        student_notebook.blank_exercises(cell)


def test_the_student_notebook_runs_and_every_check_says_what_is_missing():
    """Execute the student notebook in quick mode: each check reports its own problem."""
    from nbclient import NotebookClient

    nb = nbformat.read(STUDENT, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(STUDENT.parent)}}).execute()
    checks = [c for c in nb.cells if c.cell_type == "code" and "assignment.check_" in c.source
              and "check_training" not in c.source]
    outputs = ["".join(o.get("text", "") for o in c.outputs) for c in checks]
    expected = [assignment.NOT_WRITTEN] * 4 + ["loss is None", "early_stopping is None",
                                               assignment.NOT_WRITTEN]
    assert len(outputs) == len(expected) == 7
    for number, (out, message) in enumerate(zip(outputs, expected), start=1):
        assert f"Exercise {number}" in out and "does not pass yet" in out and message in out, out
        assert "Traceback" not in out and not any(o.output_type == "error" for o in checks[number - 1].outputs)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs)]
    first_check = code.index(checks[0])
    assert errors and errors[0] > first_check  # everything up to the first check runs cleanly
    # The training is given code: with no model to train, its check finds no history.
    training = next(c for c in code if "check_training" in c.source)
    assert [o.ename for o in training.outputs if o.output_type == "error"] == ["NameError"]


# --- The solution's functions and their wrong variants ------------------------------------

@pytest.fixture(scope="module")
def sources(solution):
    """The source of each function the solution defines, by name."""
    return notebook_code.function_cells(solution)


def namespace():
    return {"keras": keras, "layers": layers, "np": np, "m2nist": m2nist}


@pytest.fixture(scope="module")
def reference(sources):
    """The solution notebook's exercise functions, defined from its cells."""
    names = ["pixel_weights", "conv_block", "encoder", "fcn8_decoder", "grade_from_confusion"]
    return notebook_code.define("\n\n".join(sources[n] for n in names), namespace())


PATIENCE = 8


@pytest.fixture(scope="module")
def early_stopping_cell(solution):
    """The source of the solution's exercise 6 cell, which creates ``early_stopping``."""
    return next(c.source for c in solution.cells if c.cell_type == "code" and START in c.source
                and "early_stopping = " in c.source)


def solution_early_stopping(cell, old=None, new=None):
    """Run the solution's exercise 6 cell (changed: ``old`` replaced by ``new``); return its callback."""
    if old is not None:
        assert old in cell, old
        cell = cell.replace(old, new)
    return notebook_code.define(cell, {"keras": keras, "PATIENCE": PATIENCE})["early_stopping"]


def variant(sources, name, old, new, base=None):
    """Define a changed copy of the solution's function ``name`` (on top of ``base``'s names)."""
    source = sources[name]
    assert old in source, old
    ns = dict(base) if base is not None else namespace()
    return notebook_code.define(source.replace(old, new), ns)[name]


def run_check(check, *args, capsys):
    """Run a check; return (passed, what it printed)."""
    assert check(*args) is None  # a notebook cell must show the printed verdict only
    out = capsys.readouterr().out
    assert out.count("passes.") + out.count("does not pass yet") == 1, out
    return "passes." in out, out


def test_the_solution_passes_every_check(reference, capsys):
    r = reference
    assert run_check(assignment.check_pixel_weights, r["pixel_weights"], capsys=capsys)[0]
    assert run_check(assignment.check_conv_block, r["conv_block"], capsys=capsys)[0]
    assert run_check(assignment.check_encoder, r["encoder"], capsys=capsys)[0]
    assert run_check(assignment.check_decoder, r["fcn8_decoder"], r["encoder"], capsys=capsys)[0]
    assert run_check(assignment.check_grade, r["grade_from_confusion"], capsys=capsys)[0]


def test_the_solutions_early_stopping_passes(early_stopping_cell, capsys):
    assert run_check(assignment.check_early_stopping, solution_early_stopping(early_stopping_cell),
                     PATIENCE, capsys=capsys)[0]


def not_written(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("check, args", [
    (assignment.check_pixel_weights, ()), (assignment.check_conv_block, ()),
    (assignment.check_encoder, ()), (assignment.check_decoder, (not_written,)),
    (assignment.check_grade, ()),
])
def test_a_placeholder_is_reported_as_not_written(check, args, capsys):
    ok, out = run_check(check, not_written, *args, capsys=capsys)
    assert not ok and assignment.NOT_WRITTEN in out and "Traceback" not in out, out


# Exercise 1: the per-pixel weights.
WEIGHTS = "np.where(labels == m2nist.BACKGROUND, 1.0, digit_weight)"


@pytest.mark.parametrize("new, message", [
    ("np.where(labels == m2nist.BACKGROUND, digit_weight, 1.0)", "the wrong way round"),
    ("np.where((labels > 0) & (labels < 10), digit_weight, 1.0)", "the digit 0 is weighted as background"),
    ("np.where(labels > 0, digit_weight, 1.0)", "the background pixel at (0, 0) (class 10) gets 10"),
    ("np.where(labels == m2nist.BACKGROUND, 1.0, 10.0)", "use the digit_weight argument"),
    ("np.where(labels == m2nist.BACKGROUND, 0.0, digit_weight)", "background pixels get weight 0"),
    ("(labels != m2nist.BACKGROUND) * digit_weight", "background pixels get weight 0"),
    ("np.where(labels == m2nist.BACKGROUND, 1, int(digit_weight))", "rounded to whole numbers"),
    ("np.where(labels == m2nist.BACKGROUND, 1.0, digit_weight)[..., None]", "have shape (2, 4, 1)"),
    ("np.full(len(labels), digit_weight)", "have shape (2,)"),
    ("np.where(labels == m2nist.BACKGROUND, 1.0, digit_weight) / digit_weight",
     "the background pixel at (0, 0) (class 10) gets 0.1, expected 1"),
])
def test_pixel_weights_check_names_the_mistake(sources, new, message, capsys):
    broken = variant(sources, "pixel_weights", WEIGHTS, f"({new})")
    ok, out = run_check(assignment.check_pixel_weights, broken, capsys=capsys)
    assert not ok and message in out, out


def test_pixel_weights_check_catches_changed_labels_and_a_missing_result(sources, capsys):
    in_place = variant(sources, "pixel_weights", f"weights = {WEIGHTS}.astype(np.float32)",
                       "weights = labels\n    weights[labels != m2nist.BACKGROUND] = digit_weight")
    ok, out = run_check(assignment.check_pixel_weights, in_place, capsys=capsys)
    assert not ok and "changed the labels it was given" in out, out
    unassigned = variant(sources, "pixel_weights", f"weights = {WEIGHTS}", WEIGHTS)
    ok, out = run_check(assignment.check_pixel_weights, unassigned, capsys=capsys)
    assert not ok and "your code raised NameError: name 'weights' is not defined" in out, out


@pytest.mark.parametrize("new", [
    "(labels != m2nist.BACKGROUND) * (digit_weight - 1.0) + 1.0",
    "np.where(labels < 10, digit_weight, 1)",
])
def test_pixel_weights_written_another_way_pass(sources, new, capsys):
    assert run_check(assignment.check_pixel_weights,
                     variant(sources, "pixel_weights", WEIGHTS, f"({new})"), capsys=capsys)[0]


# Exercise 2: the convolution block.
CONV = 'layers.Conv2D(filters, kernel_size, padding="same")'
POOL = "layers.MaxPooling2D(pool_size, strides=pool_strides)"
BN = "x = layers.BatchNormalization(momentum=0.9)(x)"


@pytest.mark.parametrize("old, new, message", [
    (BN + "\n", "", "layer 6 of the block should be BatchNormalization, the block ends there"),
    ("momentum=0.9", "momentum=0.99", "BatchNormalization has momentum 0.99"),
    ("momentum=0.9", "", "BatchNormalization has momentum 0.99"),
    ("layers.LeakyReLU()", "layers.ReLU()", "layer 2 of the block should be LeakyReLU, found ReLU"),
    ("layers.LeakyReLU()", "layers.LeakyReLU(0.2)", "LeakyReLU 1 has negative_slope 0.2; use its default (0.3)"),
    ("layers.LeakyReLU()", "layers.LeakyReLU(negative_slope=0.01)", "LeakyReLU 1 has negative_slope 0.01"),
    ("layers.LeakyReLU()", 'layers.Activation("leaky_relu")', "layer 2 of the block should be LeakyReLU, found Activation"),
    ("        x = layers.LeakyReLU()(x)\n", "", "layer 2 of the block should be LeakyReLU, found Conv2D"),
    (CONV, 'layers.Conv2D(filters, kernel_size, padding="same", activation="relu")',
     "Conv2D 1 has activation 'relu' as well as the LeakyReLU"),
    ('padding="same"', 'padding="valid"', "Conv2D 1 turns 40x56 into 38x54"),
    ('padding="same"', "", "Conv2D 1 turns 40x56 into 38x54"),
    (CONV, "layers.Conv2D(16, kernel_size, padding=\"same\")", "Conv2D 1 has 16 filters when filters=8"),
    (CONV, 'layers.Conv2D(filters, 3, padding="same")', "kernel_size (3, 3) when kernel_size=5"),
    (CONV, 'layers.Conv2D(filters, kernel_size, strides=2, padding="same")', "Conv2D 1 has strides (2, 2)"),
    (POOL, "layers.MaxPooling2D(2, strides=2)", "when pool_size=3 and pool_strides=3"),
    (POOL, "layers.MaxPooling2D(pool_size)", "strides (3, 3) when pool_size=3 and pool_strides=2"),
    ("range(2)", "range(1)", "layer 3 of the block should be Conv2D, found MaxPooling2D"),
    (f"x = {POOL}(x)\n    {BN}", f"{BN}\n    x = {POOL}(x)",
     "layer 5 of the block should be MaxPooling2D, found BatchNormalization"),
])
def test_conv_block_check_names_the_mistake(sources, old, new, message, capsys):
    broken = variant(sources, "conv_block", old, new)
    ok, out = run_check(assignment.check_conv_block, broken, capsys=capsys)
    assert not ok and message in out, out


# Exercise 3: the encoder.
PAD = "x = layers.ZeroPadding2D(((0, 0), (6, 6)))(image)"


def encoder_variant(sources, reference, old, new):
    return variant(sources, "encoder", old, new, base={**namespace(), "conv_block": reference["conv_block"]})


@pytest.mark.parametrize("old, new, message", [
    (PAD, "x = image", "reaches the first convolution at 64x84, unpadded"),
    (PAD, "x = layers.ZeroPadding2D(((0, 0), (3, 3)))(image)",
     "your padded image is 64x90: 90 is not a multiple of 32"),
    (PAD, "x = layers.ZeroPadding2D(((6, 6), (6, 6)))(image)",
     "your padded image is 76x96: 76 is not a multiple of 32"),
    (PAD, "x = layers.ZeroPadding2D((6, 0))(image)", "your padding adds 6 top, 6 bottom"),
    (PAD, "x = layers.ZeroPadding2D(((0, 0), (22, 22)))(image)", "it is padded more than they need"),
    (PAD, "x = layers.ZeroPadding2D(((16, 16), (6, 6)))(image)", "it is padded more than they need"),
    (PAD, "x = keras.ops.pad(image, ((0, 0), (0, 0), (3, 3), (0, 0)))",
     "your padded image is 64x90: 90 is not a multiple of 32"),
    (PAD, 'x = keras.ops.pad(image, ((0, 0), (0, 0), (6, 6), (0, 0)), mode="reflect")',
     "but not by adding zeros around it"),
    (PAD, "x = layers.Lambda(lambda t: keras.ops.pad(t, ((0, 0), (0, 0), (6, 6), (0, 0))))(image)",
     "your encoder holds a Lambda layer"),
    ("x = conv_block(x, 32)", "x = conv_block(x, 32, kernel_size=5)",
     "the encoder has convolutions with 5x5 kernels; the exercise fixes 3x3"),
    ("pool5 = conv_block(pool4, 256)", "pool5 = conv_block(pool4, 256, kernel_size=1)",
     "the encoder has convolutions with 1x1 kernels"),
    (PAD, "x = layers.Resizing(64, 96)(image)", "but not by adding zeros around it"),
    (PAD + "\n    x = conv_block(x, 32)",
     "x = conv_block(image, 32)\n    x = layers.ZeroPadding2D(((0, 0), (3, 3)))(x)", "unpadded"),
    ("pool3 = conv_block(x, 128)", "pool3 = x\n    x = conv_block(x, 128)", "pool3 has shape (16, 24, 64)"),
    ("pool5 = conv_block(pool4, 256)", "pool5 = pool4", "pool5 has shape (4, 6, 256), expected (2, 3, 256)"),
    ("x = conv_block(x, 32)", "x = conv_block(x, 64)", "the blocks have [64, 64, 128, 256, 256] filters"),
    ("pool5 = conv_block(pool4, 256)", "pool5 = None", "pool5 is NoneType, not a Keras tensor"),
])
def test_encoder_check_names_the_mistake(sources, reference, old, new, message, capsys):
    broken = encoder_variant(sources, reference, old, new)
    ok, out = run_check(assignment.check_encoder, broken, capsys=capsys)
    assert not ok and message in out, out


@pytest.mark.parametrize("new", [
    "x = image",
    "x = layers.ZeroPadding2D(((0, 0), (3, 3)))(image)",
    "x = layers.ZeroPadding2D(((0, 0), (22, 22)))(image)",
    "x = layers.ZeroPadding2D(((32, 32), (22, 22)))(image)",
])
def test_the_encoder_check_never_names_the_size_to_pad_to(sources, reference, new, capsys):
    ok, out = run_check(assignment.check_encoder, encoder_variant(sources, reference, PAD, new), capsys=capsys)
    assert not ok and "96" not in out and "smallest" not in out, out


def test_encoder_check_says_when_the_features_come_back_in_the_wrong_order(reference, capsys):
    def encoder(image):
        return tuple(reversed(reference["encoder"](image)))

    ok, out = run_check(assignment.check_encoder, encoder, capsys=capsys)
    assert not ok and "in the order (pool3, pool4, pool5)" in out, out


def test_encoder_padding_reads_an_encoder_already_built_and_does_not_build_it_again(reference):
    calls = []

    def encoder(image):
        calls.append(image)
        return reference["encoder"](image)

    inputs = keras.Input((64, 84, 1))
    built = inputs, encoder(inputs)
    before, sides, padded = assignment.encoder_padding(encoder, built)
    assert len(calls) == 1  # only the call above
    assert padded == (64, 96) and sum(sides.values()) == 12 and sides["top"] == sides["bottom"] == 0
    assert [type(layer).__name__ for layer in before] == ["ZeroPadding2D"]
    assert assignment.encoder_padding(encoder)[1:] == (sides, padded)  # builds it itself
    assert len(calls) == 2


@pytest.mark.parametrize("new", [
    "x = layers.ZeroPadding2D(((0, 0), (0, 12)))(image)",  # the original assignment's choice
    "x = layers.ZeroPadding2D(((0, 0), (12, 0)))(image)",
    "x = layers.ZeroPadding2D((0, 6))(image)",  # the (rows, columns) shorthand
    "x = keras.ops.pad(image, ((0, 0), (0, 0), (6, 6), (0, 0)))",  # an operation, not a layer
])
def test_any_padding_to_64_by_96_passes_the_encoder_check(sources, reference, new, capsys):
    assert run_check(assignment.check_encoder, encoder_variant(sources, reference, PAD, new),
                     capsys=capsys)[0]


# Exercise 4: the decoder, checked against the encoder's padding.
CROP = "x = layers.Cropping2D(((0, 0), (6, 6)))(x)"
FINAL_UP = "layers.Conv2DTranspose(n_classes, 16, strides=8"
SOFTMAX = 'outputs = layers.Activation("softmax")(x)'


@pytest.mark.parametrize("old, new, message", [
    (CROP, "", "the output is 64x96, expected 64x84: the output still has the padded size"),
    (CROP, "x = layers.Cropping2D(((0, 0), (0, 12)))(x)", "comes back moved 6 columns right"),
    (CROP, "x = layers.Cropping2D(((0, 0), (12, 0)))(x)", "comes back moved 6 columns left"),
    (CROP, "x = layers.Cropping2D(((6, 6), (0, 0)))(x)", "the output is 52x96"),
    (CROP, "x = layers.Cropping2D((0, 6))(x)\n    x = layers.Cropping2D(((0, 0), (0, 0)))(x)", None),
    (SOFTMAX, "outputs = x", "not probabilities"),
    (SOFTMAX, "outputs = layers.Softmax(axis=1)(x)", "not probabilities"),
    (SOFTMAX, 'outputs = layers.Activation("sigmoid")(x)', "not probabilities"),
    ("x = layers.Add()([x, layers.Conv2D(n_classes, 1)(pool3)])", "",
     "does not depend on the pool3 features"),
    ("x = layers.Add()([x, layers.Conv2D(n_classes, 1)(pool4)])",
     "x = layers.Concatenate()([x, layers.Conv2D(n_classes, 1)(pool4)])", "found 1 Add layers"),
    ("layers.Add()([x, layers.Conv2D(n_classes, 1)(pool4)])", "layers.Add()([x, pool4])",
     "an Add needs both inputs at the same size and with the same number of channels"),
    ("layers.Conv2D(n_classes, 1)(pool3)", "layers.Conv2D(n_classes, 1)(pool4)",
     "an Add needs both inputs at the same size"),
    ("4, strides=2, padding=\"same\", use_bias=False)(pool5)", "4, strides=4, padding=\"same\", use_bias=False)(pool5)",
     "an Add needs both inputs at the same size"),
    (FINAL_UP, "layers.Conv2DTranspose(n_classes, 4, strides=8", "do not depend on the input at all"),
    (CROP, "x = x[:, :, :-12, :]", "comes back moved 6 columns right"),
    (CROP, "x = x[:, :, 6:-6, :] * 2.0", "the scores are changed, not cropped"),
    (CROP, "x = layers.Lambda(lambda t: t[:, :, 6:-6, :])(x)",
     "your decoder holds a Lambda layer, a Python function: the grader refuses such a model"),
    ("layers.Conv2D(n_classes, 1)(pool4)", 'layers.Conv2D(n_classes, 3, padding="same")(pool4)',
     "a score layer is a 3x3 convolution; the exercise fixes 1x1"),
    ('use_bias=False)(pool5)', 'use_bias=True)(pool5)', "Conv2DTranspose 1 of the decoder has a bias"),
    (FINAL_UP + ', padding="same", use_bias=False)', FINAL_UP + ', padding="same")',
     "Conv2DTranspose 3 of the decoder has a bias"),
    (FINAL_UP + ', padding="same", use_bias=False)(x)', "layers.UpSampling2D(8)(x)",
     "upsample with Conv2DTranspose layers"),
    ("layers.Conv2DTranspose(n_classes, 16", "layers.Conv2DTranspose(11, 16",
     "with n_classes=3 the output has 11 channels"),
])
def test_decoder_check_names_the_mistake(sources, reference, old, new, message, capsys):
    broken = variant(sources, "fcn8_decoder", old, new)
    ok, out = run_check(assignment.check_decoder, broken, reference["encoder"], capsys=capsys)
    if message is None:  # a harmless rewrite of the crop, as a control
        assert ok, out
    else:
        assert not ok and message in out, out


@pytest.mark.parametrize("pad, crop, message", [
    ("(0, 12)", "(0, 12)", None),
    ("(12, 0)", "(12, 0)", None),
    ("(0, 12)", "(6, 6)", "moved 6 columns left: the encoder pads 12 right, the decoder crops 6 left, 6 right"),
    ("(12, 0)", "(0, 12)", "moved 12 columns right"),
])
def test_the_crop_must_undo_the_encoders_own_padding(sources, reference, pad, crop, message, capsys):
    encoder = encoder_variant(sources, reference, PAD, f"x = layers.ZeroPadding2D(((0, 0), {pad}))(image)")
    decoder = variant(sources, "fcn8_decoder", CROP, f"x = layers.Cropping2D(((0, 0), {crop}))(x)")
    ok, out = run_check(assignment.check_decoder, decoder, encoder, capsys=capsys)
    assert ok == (message is None) and (message is None or message in out), out


@pytest.mark.parametrize("old, new", [
    (FINAL_UP, "layers.Conv2DTranspose(n_classes, 8, strides=8"),  # the original assignment's
    ("n_classes, 4, strides=2", "n_classes, 3, strides=2"),  # 3x3: no holes, the brief allows it
    ("n_classes, 4, strides=2", "n_classes, 2, strides=2"),  # the kernel as large as the stride
    (CROP, "x = x[:, :, 6:-6, :]"),  # cropping by slicing: the grader accepts the operation
    ("layers.Conv2D(n_classes, 1)(pool4)", 'layers.Conv2D(n_classes, 1, activation="relu")(pool4)'),
    (CROP + "\n    " + SOFTMAX, 'x = layers.Activation("softmax")(x)\n    outputs = layers.Cropping2D(((0, 0), (6, 6)))(x)'),
])
def test_decoders_written_another_way_pass(sources, reference, old, new, capsys):
    decoder = variant(sources, "fcn8_decoder", old, new)
    assert run_check(assignment.check_decoder, decoder, reference["encoder"], capsys=capsys)[0]


class OwnCrop(layers.Layer):
    """A crop written as a layer class of one's own: the grader refuses classes from outside Keras."""

    def call(self, x):
        return x[:, :, 6:-6, :]


def test_a_crop_layer_of_ones_own_class_is_refused_as_the_grader_refuses_it(sources, reference, capsys):
    decoder = variant(sources, "fcn8_decoder", CROP, "x = OwnCrop()(x)",
                      base={**namespace(), "OwnCrop": OwnCrop})
    ok, out = run_check(assignment.check_decoder, decoder, reference["encoder"], capsys=capsys)
    assert not ok and "a layer of its own class (OwnCrop" in out and "grader refuses" in out, out


@pytest.mark.parametrize("crop, refused", [
    ("x = x[:, :, 6:-6, :]", False),
    ("x = layers.Lambda(lambda t: t[:, :, 6:-6, :])(x)", True),
    ("x = OwnCrop()(x)", True),
])
def test_the_decoder_check_refuses_what_the_grader_refuses(sources, reference, crop, refused, tmp_path):
    # The check scans the model's configuration as the grader (grader.safety) scans a saved file.
    decoder = variant(sources, "fcn8_decoder", CROP, crop, base={**namespace(), "OwnCrop": OwnCrop})
    model = assignment._decoder_model(decoder, 11)
    assert grader_refuses(model, tmp_path / "decoder.keras") == refused == bool(assignment._code_in(model))


def grader_refuses(model, path):
    """Save ``model`` to ``path``; return whether the grader refuses the file without running it."""
    from grader import safety
    from helpers.grading import InvalidSubmission

    model.save(path)
    try:
        safety.read_configuration(path)
    except InvalidSubmission:
        return True
    return False


def test_the_encoder_check_refuses_what_the_grader_refuses(sources, reference, tmp_path):
    for pad, refused in [("x = keras.ops.pad(image, ((0, 0), (0, 0), (6, 6), (0, 0)))", False),
                         ("x = layers.Lambda(lambda t: keras.ops.pad(t, ((0, 0), (0, 0), (6, 6), (0, 0))))(image)", True)]:
        encoder = encoder_variant(sources, reference, PAD, pad)
        inputs = keras.Input((64, 84, 1))
        model = keras.Model(inputs, encoder(inputs)[0])
        refuses = grader_refuses(model, tmp_path / "encoder.keras")
        assert refuses == refused == bool(assignment._code_in(model)), pad


def test_the_original_assignments_valid_upsampling_with_crops_passes(reference, capsys):
    def fcn8_decoder(pool3, pool4, pool5, n_classes):  # as the original course wrote it
        up = dict(kernel_size=4, strides=2, use_bias=False)
        x = layers.Cropping2D((1, 1))(layers.Conv2DTranspose(n_classes, **up)(pool5))
        x = layers.Add()([x, layers.Conv2D(n_classes, 1, activation="relu", padding="same")(pool4)])
        x = layers.Cropping2D((1, 1))(layers.Conv2DTranspose(n_classes, **up)(x))
        x = layers.Add()([x, layers.Conv2D(n_classes, 1, activation="relu", padding="same")(pool3)])
        x = layers.Conv2DTranspose(n_classes, 8, strides=8, use_bias=False)(x)
        return layers.Activation("softmax")(layers.Cropping2D(((0, 0), (6, 6)))(x))

    assert run_check(assignment.check_decoder, fcn8_decoder, reference["encoder"], capsys=capsys)[0]


def test_the_decoder_check_needs_the_encoder_to_check_the_crop(reference, capsys):
    ok, out = run_check(assignment.check_decoder, reference["fcn8_decoder"], not_written, capsys=capsys)
    assert not ok and "make exercise 3 pass first" in out, out


# Exercise 5: loss, optimiser, metrics.
@pytest.fixture(scope="module")
def schedule():
    return keras.optimizers.schedules.CosineDecay(2e-4, 100, warmup_target=2e-3, warmup_steps=10, alpha=0.01)


SPARSE = keras.losses.SparseCategoricalCrossentropy


@pytest.mark.parametrize("loss, optimizer, metric_list, message", [
    (SPARSE(), "schedule", ["accuracy"], None),
    ("sparse_categorical_crossentropy", "schedule", ["accuracy"], None),
    (keras.losses.sparse_categorical_crossentropy, "schedule", [keras.metrics.SparseCategoricalAccuracy()], None),
    (SPARSE(), "sgd", ["accuracy"], "the optimiser is SGD"),
    (SPARSE(), "adam", ["accuracy"], "Adam's learning rate is a constant 0.001"),
    (SPARSE(), keras.optimizers.Adam(2e-3), ["accuracy"], "a constant 0.002: give it the schedule"),
    (SPARSE(), keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(2e-3, 100, 0.5)),
     ["accuracy"], "another schedule"),
    (SPARSE(), "adamw_schedule", ["accuracy"], "the optimiser is AdamW"),
    (SPARSE(), "not-an-optimiser", ["accuracy"], "is not a Keras optimiser"),
    ("categorical_crossentropy", "schedule", ["accuracy"], "fails on class-id labels"),
    ("mse", "schedule", ["accuracy"], "fails on class-id labels"),
    (SPARSE(from_logits=True), "schedule", ["accuracy"], "from_logits=True"),
    (SPARSE(ignore_class=10), "schedule", ["accuracy"], "ignores the background pixels"),
    (SPARSE(), "schedule", [keras.metrics.Accuracy()], "metric_list [Accuracy(...)] fails on class-id labels"),
    (SPARSE(), "schedule", [keras.metrics.TopKCategoricalAccuracy(k=3)], "fails on class-id labels"),
    (SPARSE(), "schedule", [keras.metrics.SparseTopKCategoricalAccuracy(k=3)], "none of the metrics is the pixel accuracy"),
    (SPARSE(), "schedule", ["categorical_accuracy"], "fails on class-id labels"),
    (SPARSE(), "schedule", "accuracy", "must be a non-empty list"),
    (SPARSE(), "schedule", [], "must be a non-empty list"),
    (SPARSE(), "schedule", ["accuracy", keras_metrics.mean_iou_metric(11)], "the mean IoU is added for you"),
    (None, None, None, "loss is None"),
])
def test_compile_check(schedule, loss, optimizer, metric_list, message, capsys):
    if optimizer == "schedule":
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
    elif optimizer == "adamw_schedule":
        optimizer = keras.optimizers.AdamW(schedule)
    ok, out = run_check(assignment.check_compile, loss, optimizer, metric_list, schedule, capsys=capsys)
    assert ok == (message is None), out
    if message:
        assert message in out, out
    if loss is None:
        assert "optimizer is None" in out and "metric_list is None" in out


# Exercise 6: early stopping, a decision.
ES = 'monitor="val_mean_iou", mode="max",'


@pytest.mark.parametrize("old, new, message", [
    (None, None, None),
    (ES, 'monitor="val_mean_iou", mode="auto",', None),  # Keras reads MeanIoU's direction: up
    (ES, 'monitor="val_mean_iou",', None),  # mode's default is "auto"
    (ES, 'monitor="val_loss", mode="min",', "monitor='val_loss' judges each epoch by the cross-entropy"),
    (ES, 'monitor="val_loss",', "monitor='val_loss'"),
    (ES, 'monitor="val_accuracy", mode="max",', "a model that answers background everywhere already gets about 94 %"),
    (ES, 'monitor="mean_iou", mode="max",', "monitor='mean_iou' watches the training images"),
    (ES, 'monitor="loss", mode="min",', "monitor='loss' watches the training images"),
    (ES, 'monitor="val_iou", mode="max",', "not a quantity the training logs"),
    (ES, 'monitor="val_mean_iou", mode="min",', "mode='min' takes a falling mean IoU for an improvement"),
    ("restore_best_weights=True", "restore_best_weights=False", "restore_best_weights is off"),
    (", restore_best_weights=True", "", "restore_best_weights is off"),
    ("patience=PATIENCE", "patience=3", "patience=3: the parameters cell sets PATIENCE = 8"),
    ("restore_best_weights=True", "restore_best_weights=True, baseline=0.5", "leave baseline"),
])
def test_early_stopping_check_says_what_the_choice_would_do(early_stopping_cell, old, new, message, capsys):
    callback = solution_early_stopping(early_stopping_cell, old, new)
    ok, out = run_check(assignment.check_early_stopping, callback, PATIENCE, capsys=capsys)
    assert ok == (message is None) and (message is None or message in out), out


@pytest.mark.parametrize("value, message", [
    (None, "early_stopping is None"),
    (keras.callbacks.ModelCheckpoint("model.keras"), "a ModelCheckpoint, not a keras.callbacks.EarlyStopping"),
])
def test_early_stopping_check_wants_an_early_stopping_callback(value, message, capsys):
    ok, out = run_check(assignment.check_early_stopping, value, PATIENCE, capsys=capsys)
    assert not ok and message in out, out


def test_the_early_stopping_messages_never_name_the_answer(early_stopping_cell, capsys):
    for old, new in [(ES, 'monitor="val_loss", mode="min",'), (ES, 'monitor="loss", mode="min",'),
                     (ES, 'monitor="val_accuracy", mode="max",')]:
        callback = solution_early_stopping(early_stopping_cell, old, new)
        out = run_check(assignment.check_early_stopping, callback, PATIENCE, capsys=capsys)[1]
        assert "val_mean_iou" not in out and "'max'" not in out, out


def test_mode_auto_finds_the_mean_ious_direction_as_the_check_assumes():
    # The check accepts mode="auto" for val_mean_iou: Keras takes the direction from the metric.
    model = keras.Sequential([keras.Input((4, 4, 1)), layers.Conv2D(3, 1, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[keras_metrics.mean_iou_metric(3)])
    x, y = np.zeros((2, 4, 4, 1), "float32"), np.zeros((2, 4, 4), "int64")
    callback = keras.callbacks.EarlyStopping(monitor="val_mean_iou", patience=1)
    model.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[callback], verbose=0)
    assert callback.monitor_op is keras.ops.greater


# The training, given code, checked at work.
EPOCHS, STEPS = 30, 250


def history_of(asked=EPOCHS, ran=12, steps=STEPS, val=True, best=0.62, used=True):
    """A History as model.fit leaves it, and the callbacks list, with one thing changed at a time."""
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    history = keras.callbacks.History()
    history.set_model(model)
    history.params = {"epochs": asked, "steps": steps, "verbose": 2}
    history.epoch = list(range(ran))
    history.history = {"loss": [1.0] * ran, "mean_iou": [0.5] * ran}
    if val:
        history.history.update(val_loss=[1.0] * ran, val_mean_iou=list(np.linspace(best / 2, best, ran)))
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max")]
    if used:
        callbacks[0].set_model(model)
    return history, callbacks


@pytest.mark.parametrize("case, message", [
    (dict(), None),
    (dict(asked=30, ran=30), None),  # the whole schedule (above: early stopping ended it at 12)
    (dict(asked=40, ran=40), "model.fit was asked for 40 epochs; the learning-rate schedule was built for 30"),
    (dict(asked=1, ran=1), "model.fit was asked for 1 epochs; the learning-rate schedule decays over 30"),
    (dict(val=False), "no validation scores"),
    (dict(used=False), "the callbacks (EarlyStopping) were not passed to this model.fit"),
    (dict(steps=10), "each epoch ran 10 steps, not the 250 batches"),
    (dict(best=0.09), "the validation mean IoU never rose above 0.090"),
])
def test_training_check(case, message, capsys):
    history, callbacks = history_of(**case)
    ok, out = run_check(assignment.check_training, history, callbacks, EPOCHS, STEPS, capsys=capsys)
    assert ok == (message is None) and (message is None or message in out), out


@pytest.mark.parametrize("value, message", [
    (None, "history is None"), ({"loss": [1.0]}, "history is a dict"), ("done", "history is a str"),
])
def test_training_check_wants_the_history_object(value, message, capsys):
    ok, out = run_check(assignment.check_training, value, [], EPOCHS, STEPS, capsys=capsys)
    assert not ok and message in out, out


def test_training_check_finds_validation_on_other_data_than_val_ds(capsys):
    # Validated on the training data, or on part of val_ds: the History looks complete, but
    # the trained model, evaluated on val_ds, scores what no epoch's validation scored.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 4, 4, 1), dtype="float32"), rng.integers(0, 3, (32, 4, 4))
    train = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices((x[16:], y[16:])).batch(8)
    model = keras.Sequential([keras.Input((4, 4, 1)), layers.Conv2D(3, 1, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=[keras_metrics.mean_iou_metric(3)])
    for validation, message in [(val_ds, None), (train, "were not computed on val_ds"),
                                (val_ds.take(1), "were not computed on val_ds")]:
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max",
                                                   patience=1, restore_best_weights=True)]
        history = model.fit(train, validation_data=validation, epochs=3, callbacks=callbacks,
                            shuffle=False, verbose=0)
        ok, out = run_check(assignment.check_training, history, callbacks, 3, 2, val_ds, capsys=capsys)
        assert ok == (message is None) and (message is None or message in out), out


def small_m2nist(count=48):
    """A few quick-mode M2NIST images, scaled, with their labels and the recipe's weights."""
    from helpers import synthetic

    images, labels = synthetic.m2nist_arrays(count, seed=3)
    weights = np.where(labels == m2nist.BACKGROUND, 1.0, 10.0).astype("float32")
    return m2nist.scale_images(images), labels.astype("int64"), weights


def test_training_check_finds_a_training_that_ignored_the_weights(capsys):
    # The data carries the weights, but model.fit was given the images and labels alone: the
    # History looks complete, yet its training loss is the unweighted one.
    from helpers import datasets

    images, labels, weights = small_m2nist()
    train_ds = datasets.make_m2nist_dataset(images[:32], labels[:32], 8, weights=weights[:32])
    val_ds = datasets.make_m2nist_dataset(images[32:], labels[32:], 8)
    for weighted in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64, 84, 1)), layers.Conv2D(8, 3, padding="same", activation="relu"),
                                  layers.Conv2D(11, 1, activation="softmax")])
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                      metrics=[keras_metrics.mean_iou_metric(11)])
        data = train_ds if weighted else train_ds.map(lambda x, y, w: (x, y))
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max", patience=5,
                                                   restore_best_weights=True)]
        history = model.fit(data, validation_data=val_ds, epochs=3, callbacks=callbacks, verbose=0)
        out = run_check(assignment.check_training, history, callbacks, 3, 4, val_ds, train_ds,
                        capsys=capsys)[1]
        # (A model this small may not learn the digits in 3 epochs: only the weights are judged.)
        assert ("ignored the per-pixel weights" in out) == (not weighted), out


def test_training_check_wants_the_weights_in_train_ds(capsys):
    from helpers import datasets

    images, labels, _ = small_m2nist(16)
    unweighted = datasets.make_m2nist_dataset(images, labels, 8)
    model = keras.Sequential([keras.Input((64, 84, 1)), layers.Conv2D(11, 1, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(unweighted, epochs=1, verbose=0)
    history.history["val_loss"] = [1.0]  # as if validated
    ok, out = run_check(assignment.check_training, history, [], 1, 2, None, unweighted, capsys=capsys)
    assert not ok and "train_ds holds (images, labels) without the per-pixel weights" in out, out


def test_training_check_reads_a_real_fit():
    # The check relies on what Keras records: History.params and each callback's model.
    model = keras.Sequential([keras.Input((2,)), layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss")]
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), callbacks=callbacks, verbose=0)
    assert history.params["epochs"] == 2 and history.params["steps"] == 2
    assert callbacks[0].model is history.model
    other = [keras.callbacks.EarlyStopping(monitor="val_loss")]
    assert other[0].model is not model.fit(x, y, epochs=1, verbose=0).model


# Exercise 7: the grade, from a confusion matrix.
IOU = "iou = tp / union"
GRADE = "grade = 10 * np.nansum(iou[:10])"
UNION = "union = cm.sum(axis=0) + cm.sum(axis=1) - tp"


@pytest.mark.parametrize("old, new, message", [
    (GRADE, "grade = 10 * np.nansum(iou)", "your grade counts the background too"),
    (GRADE, "grade = 10 * np.nansum(iou[1:])", "leaves out digit 0 and counts the background"),
    (GRADE, "grade = np.nanmean(iou[:10])", "the mean IoU of the digits, between 0 and 1"),
    (GRADE, "grade = 10 * np.nanmean(iou[:10])", "by the rule it is 100.00"),
    (GRADE, "grade = np.nansum(iou[:10])", "the sum of the digits' IoUs, at most 10"),
    (GRADE, "grade = 10 * np.sum(iou[:10])", "your grade is NaN when a digit neither occurs nor is predicted"),
    (GRADE, "grade = 100 * np.nanmean(iou[:10])", "leaves it out and scales the other digits up to 100"),
    (GRADE, "grade = 10 * np.nansum(np.where(np.isnan(iou), 1.0, iou)[:10])", "as a perfect IoU of 1"),
    (IOU, "iou = 2 * tp / (union + tp)", "Dice coefficients"),
    (IOU, "iou = tp / cm.sum(axis=1)", "TP / (TP + FN): the false positives"),
    (IOU, "iou = tp / cm.sum(axis=0)", "TP / (TP + FP): the false negatives"),
    (UNION, "union = cm.sum(axis=0) + cm.sum(axis=1)", "counts the true positives twice"),
    ("tp = np.diag(cm)", "tp = cm.sum(axis=0)", "on a matrix where every class occurs your grade is"),
    ("cm = np.asarray(cm, dtype=np.float64)", "cm = np.asarray(cm).astype(np.int64)",
     "given as fractions of the pixels"),
    (IOU, "iou = tp // union", "on a matrix where every class occurs your grade is 0.00"),
    (GRADE, GRADE + "\n    return iou[:10]", "returned 10 numbers"),
    ("tp = np.diag(cm)", "tp = np.diag(cm).copy()\n    np.fill_diagonal(cm, 0)\n    cm = cm + np.diag(tp)",
     "changed the confusion matrix"),
])
def test_grade_check_names_the_mistake(sources, old, new, message, capsys):
    broken = variant(sources, "grade_from_confusion", old, new)
    ok, out = run_check(assignment.check_grade, broken, capsys=capsys)
    assert not ok and message in out, out


@pytest.mark.parametrize("old, new", [
    (GRADE, "grade = 10 * np.sum(np.nan_to_num(iou[:10]))"),
    (GRADE, "grade = 10 * sum(v for v in iou[:10] if v == v)"),
    (IOU, "iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)"),
    (IOU, "iou = metrics.iou_per_class(cm)"),  # the course's own IoU: the rule is the exercise
    ("tp = np.diag(cm)", "cm = cm.T\n    tp = np.diag(cm)"),  # IoU is the same both ways round
])
def test_grades_written_another_way_pass(sources, old, new, capsys):
    fixed = variant(sources, "grade_from_confusion", old, new, base={**namespace(), "metrics": metrics})
    assert run_check(assignment.check_grade, fixed, capsys=capsys)[0]


def test_the_grade_check_uses_the_graders_rule():
    from helpers import grading

    for name, cm in assignment._grade_cases().items():
        scores = metrics.Scores.from_confusion(cm)
        assert assignment._rule(cm) == grading.grade(scores), name
    cases = assignment._grade_cases()
    assert assignment._rule(cases["a perfect model's matrix"]) == 100
    assert assignment._rule(cases["the matrix of a model that answers background everywhere"]) == 0


# --- Reporting the learner's own exceptions ------------------------------------------------

def test_a_check_reports_the_learners_exception_instead_of_raising(capsys):
    def conv_block(x, filters, **kwargs):
        return layers.Conv2D(filters)(x)  # kernel_size missing: TypeError inside Keras

    ok, out = run_check(assignment.check_conv_block, conv_block, capsys=capsys)
    assert not ok and "your code raised TypeError" in out and "layers.Conv2D(filters)(x)" in out


def test_a_reported_exception_points_at_the_learners_line_not_into_keras(capsys):
    def conv_block(x, filters, kernel_size=3, pool_size=2, pool_strides=2):
        return layers.Conv2D(filters, kernel_size, padding="smae")(x)  # a typo Keras rejects

    ok, out = run_check(assignment.check_conv_block, conv_block, capsys=capsys)
    assert not ok and 'padding="smae"' in out, out


def test_a_reported_exception_skips_frames_of_packages_in_dist_packages(tmp_path, monkeypatch, capsys):
    # Colab installs packages under dist-packages, not site-packages: an error raised deep
    # inside such a package must still be reported at the learner's own line.
    package = tmp_path / "dist-packages" / "fake_dist_lib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def build(x):\n    raise TypeError('rejected inside the library')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "dist-packages"))
    try:
        import fake_dist_lib

        def conv_block(x, filters, kernel_size=3, pool_size=2, pool_strides=2):
            return fake_dist_lib.build(x)  # the learner's line

        ok, out = run_check(assignment.check_conv_block, conv_block, capsys=capsys)
    finally:
        sys.modules.pop("fake_dist_lib", None)
    assert not ok and "rejected inside the library" in out, out
    assert "return fake_dist_lib.build(x)" in out and "raise TypeError" not in out, out


def test_library_frames_are_recognised_by_install_folder(monkeypatch, tmp_path):
    import sysconfig

    purelib = tmp_path / "pylibs"
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"purelib": str(purelib),
                                                                  "platlib": str(purelib)})
    assert assignment._is_library_frame(str(purelib / "somepkg" / "core.py"))
    assert assignment._is_library_frame("/usr/lib/python3/dist-packages/numpy/core.py")
    assert assignment._is_library_frame("/x/lib/python3.11/site-packages/numpy/core.py")
    assert assignment._is_library_frame(keras.layers.Conv2D.__call__.__code__.co_filename)
    assert assignment._is_library_frame(assignment.__file__)
    assert not assignment._is_library_frame(__file__)
    assert not assignment._is_library_frame("/tmp/ipykernel_123/456.py")  # a notebook cell
