"""The assignment: one solution notebook, a generated student notebook, checks that say what is wrong."""

import ast
import re
import sys

import keras
import nbformat
import pytest
from keras import layers

from helpers import assignment, notebook_code, student_notebook
from helpers.student_notebook import END, SOLUTION, START, STUDENT


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


def test_the_committed_student_notebook_is_what_the_generator_writes(solution):
    expected = student_notebook.render(student_notebook.student_version(solution))
    assert STUDENT.read_text() == expected, "run: python -m helpers.student_notebook"
    assert student_notebook.main(["--check"]) == 0


def test_the_assignment_has_five_exercises(solution, student):
    assert len(exercise_blocks(solution)) == len(exercise_blocks(student)) == 5


def test_student_exercises_hold_only_placeholders(student):
    for block in exercise_blocks(student):
        for node in ast.parse("\n".join(l.strip() for l in block.split("\n"))).body:
            if isinstance(node, ast.Assign):
                assert isinstance(node.value, ast.Constant) and node.value.value is None, ast.unparse(node)
            else:
                call = node.value
                assert all(isinstance(a, ast.Constant) and a.value is None
                           for a in call.args + [k.value for k in call.keywords]), ast.unparse(node)


def test_no_solution_code_appears_anywhere_in_the_student_notebook(solution, student):
    student_text = re.sub(r"\s+", "", "\n".join(c.source for c in student.cells))
    for block in exercise_blocks(solution):
        for node in ast.parse("\n".join(l.strip() for l in block.split("\n"))).body:
            value = node.value
            if isinstance(value, ast.Name):  # e.g. epochs = EPOCHS: a name, not a solution
                continue
            code = re.sub(r"\s+", "", ast.unparse(value))
            assert code not in student_text, f"solution code leaked: {ast.unparse(node)}"


def test_solution_only_cells_and_the_solution_title_stay_out(solution, student):
    assert any("solution-only" in c.metadata.get("tags", []) for c in solution.cells)
    assert not any("solution-only" in c.metadata.get("tags", []) for c in student.cells)
    assert "(solution)" in solution.cells[0].source and "(solution)" not in student.cells[0].source
    assert "solutions/" not in student.cells[0].source
    assert all("NBVAL_CHECK_OUTPUT" not in c.source and not c.get("outputs") for c in student.cells)


def test_the_generator_blanks_assignments_and_keeps_keyword_names():
    cell = "\n".join([
        "def f(x):",
        "    " + START,
        "    # a hint stays",
        "    y = layers.Dense(3,",
        "                     activation='relu')(x)",
        "    model.compile(optimizer='adam', loss='mse')",
        "    " + END,
        "    return y",
    ])
    assert student_notebook.blank_exercises(cell).split("\n") == [
        "def f(x):", "    " + START, "    # a hint stays", "    y = None",
        "    model.compile(optimizer=None, loss=None)", "    " + END, "    return y"]


@pytest.mark.parametrize("cell, message", [
    (f"{START}\nfor i in range(3):\n    x = i\n{END}", "assignments or calls"),
    (f"{START}\nx = 1\n", "unbalanced"),
    (f"{START}\n# nothing\n{END}", "no solution code"),
    (f"{START}\na = 1; b = 2\n{END}", "on its own line"),
])
def test_the_generator_refuses_what_it_cannot_blank(cell, message):
    with pytest.raises(ValueError, match=message):
        student_notebook.blank_exercises(cell)


@pytest.fixture(scope="module")
def sources(solution):
    """The source of each exercise function of the solution, by name."""
    return {name: source for name, source in notebook_code.function_cells(solution).items()
            if START in source}


@pytest.fixture(scope="module")
def reference(sources):
    """The solution notebook's exercise functions, defined from its cells."""
    return notebook_code.define("\n\n".join(sources.values()))


def run_check(check, *args, capsys):
    """Run a check; return (passed, what it printed)."""
    assert check(*args) is None  # a notebook cell must show the printed verdict only
    out = capsys.readouterr().out
    assert out.count("passes.") + out.count("does not pass yet") == 1, out
    return "passes." in out, out


def test_the_solution_passes_every_model_check(reference, capsys):
    assert run_check(assignment.check_conv_block, reference["conv_block"], capsys=capsys)[0]
    assert run_check(assignment.check_encoder, reference["encoder"], capsys=capsys)[0]
    assert run_check(assignment.check_decoder, reference["fcn8_decoder"], capsys=capsys)[0]


def variant(source, old, new):
    """Define a changed copy of a solution function."""
    assert old in source
    return notebook_code.define(source.replace(old, new))


@pytest.mark.parametrize("old, new, message", [
    ('x = layers.BatchNormalization(momentum=0.9)(x)\n', '', "layer 6 of the block should be BatchNormalization, the block ends there"),
    ("momentum=0.9", "momentum=0.99", "BatchNormalization has momentum 0.99"),
    ('x = layers.LeakyReLU()(x)\n    x = layers.Conv2D', 'x = layers.ReLU()(x)\n    x = layers.Conv2D', "layer 2 of the block should be LeakyReLU, found ReLU"),
    ('padding="same"', 'padding="valid"', "Conv2D 1 has padding='valid'"),
    ("MaxPooling2D(pool_size, strides=pool_strides)", "MaxPooling2D(3, strides=pool_strides)", "MaxPooling2D has pool_size (3, 3)"),
    ("Conv2D(filters, kernel_size", "Conv2D(16, kernel_size", "Conv2D 1 has 16 filters"),
    # Hard-coded values that happen to be the usual ones are caught by the second probe.
    ("Conv2D(filters, kernel_size", "Conv2D(filters, 3", "kernel_size (3, 3) when kernel_size=5"),
    ("MaxPooling2D(pool_size, strides=pool_strides)", "MaxPooling2D(2, strides=2)",
     "when pool_size=3 and pool_strides=3"),
])
def test_conv_block_check_names_the_mistake(sources, old, new, message, capsys):
    broken = variant(sources["conv_block"], old, new)["conv_block"]
    ok, out = run_check(assignment.check_conv_block, broken, capsys=capsys)
    assert not ok and message in out, out


def with_block(reference, source, old, new, name):
    namespace = variant(source, old, new)
    namespace["conv_block"] = reference["conv_block"]
    return namespace[name]


@pytest.mark.parametrize("old, new, message", [
    ("x = layers.ZeroPadding2D(((0, 0), (6, 6)))(image)", "x = image",
     "pool-3 has shape (8, 10, 128), expected (8, 12, 128)"),
    ("pool5 = conv_block(pool4, 256)", "pool5 = pool4", "pool-5 has shape (4, 6, 256), expected (2, 3, 256)"),
    ("pool3 = conv_block(x, 128)", "pool3 = conv_block(x, 64)", "pool-3 has shape (8, 12, 64)"),
])
def test_encoder_check_names_the_mistake(reference, sources, old, new, message, capsys):
    broken = with_block(reference, sources["encoder"], old, new, "encoder")
    ok, out = run_check(assignment.check_encoder, broken, capsys=capsys)
    assert not ok and message in out, out


def test_encoder_check_asks_for_padding(reference, sources, capsys):
    broken = with_block(reference, sources["encoder"],
                        "x = layers.ZeroPadding2D(((0, 0), (6, 6)))(image)", "x = image", "encoder")
    ok, out = run_check(assignment.check_encoder, broken, capsys=capsys)
    assert not ok and "no ZeroPadding2D layer" in out, out


@pytest.mark.parametrize("old, new, message", [
    ("x = layers.Cropping2D(((0, 0), (6, 6)))(x)", "x = x", "expected (64, 84, 11): crop the 6 padded columns"),
    ("x = layers.Add()([x, scores3])", "x = x", "does not depend on the pool-3 features"),
    ('outputs = layers.Activation("softmax")(x)', "outputs = x", "not probabilities"),
    ("x = layers.Add()([x, scores4])", "x = layers.Concatenate()([x, scores4])", "found 1 Add layers"),
])
def test_decoder_check_names_the_mistake(sources, old, new, message, capsys):
    broken = variant(sources["fcn8_decoder"], old, new)["fcn8_decoder"]
    ok, out = run_check(assignment.check_decoder, broken, capsys=capsys)
    assert not ok and message in out, out


@pytest.mark.parametrize("args, message", [
    (("sparse_categorical_crossentropy", "adam", ["accuracy"]), None),
    ((keras.losses.SparseCategoricalCrossentropy(), keras.optimizers.Adam(), ["accuracy"]), None),
    (("categorical_crossentropy", "adam", ["accuracy"]), "not one-hot"),
    ((keras.losses.SparseCategoricalCrossentropy(from_logits=True), "adam", ["accuracy"]), "from_logits=True"),
    (("sparse_categorical_crossentropy", "not-an-optimiser", ["accuracy"]), "is not a Keras optimiser"),
    (("sparse_categorical_crossentropy", "adam", "accuracy"), "must be a non-empty list"),
    ((None, None, None), "loss is None"),
])
def test_compile_check(args, message, capsys):
    ok, out = run_check(assignment.check_compile, *args, capsys=capsys)
    assert ok == (message is None), out
    if message:
        assert message in out


def test_training_check(capsys):
    history = keras.callbacks.History()
    history.epoch, history.history = [0, 1], {"loss": [1, 0.5], "val_loss": [1, 0.6]}
    assert run_check(assignment.check_training, 2, history, capsys=capsys)[0]
    history.history = {"loss": [1, 0.5]}
    ok, out = run_check(assignment.check_training, 2, history, capsys=capsys)
    assert not ok and "validation_data=val_ds" in out
    ok, out = run_check(assignment.check_training, 0, history, capsys=capsys)
    assert not ok and "at least 1" in out


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


def test_the_student_notebook_runs_and_every_check_says_what_is_missing(tmp_path):
    """Execute the student notebook in quick mode: each check reports its own problem."""
    from nbclient import NotebookClient

    nb = nbformat.read(STUDENT, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(STUDENT.parent)}}).execute()
    checks = [c for c in nb.cells if c.cell_type == "code" and "assignment.check_" in c.source]
    outputs = ["".join(o.get("text", "") for o in c.outputs) for c in checks]
    expected = ["conv_block returned None", "pool-3 is None", "fcn8_decoder returned None",
                "loss is None", "epochs is None"]
    assert len(outputs) == 5
    for number, (out, message) in enumerate(zip(outputs, expected), start=1):
        assert f"Exercise {number}" in out and "does not pass yet" in out and message in out, out
        assert "Traceback" not in out
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs)]
    first_check = code.index(checks[0])
    assert errors and errors[0] > first_check  # everything up to the first check runs cleanly
