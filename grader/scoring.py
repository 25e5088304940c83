"""A submitted file graded: loaded safely, scored by the assignment's rule, and its verdict.

The rule itself (shapes, grade, pass mark, ``score_model``) is the lesson's, in
``helpers.grading``. A submission is a ``.keras`` file. ``load_submission`` loads it with Keras ``safe_mode=True``
and no custom objects, after the checks of ``grader.safety`` (no code, nothing too
large); the model must map (64, 84, 1) images scaled to [-1, 1] to (64, 84, 11) per-pixel
class scores. ``grade_file`` does all of it for one file and returns its ``Report``.

These run inside a grading worker (``grader.workers``), under its memory and time
limits; ``check_before_loading`` is the part that needs neither Keras nor TensorFlow, which
the grader's main process runs first.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import m2nist
from helpers.grading import (DIGITS, INPUT_SHAPE, OUTPUT_SHAPE, PASS_MARK, InvalidSubmission,
                             check_model_shapes, grade, passed, score_model)
from grader import limits, safety
from grader.identity import printable

MIN_KERAS = (3, 11)  # older Keras has safe_mode bypasses: CVE-2025-1550, -8747, -9906

# The rule is the lesson's (helpers.grading); re-exported for the grader's modules.
__all__ = ["DIGITS", "INPUT_SHAPE", "OUTPUT_SHAPE", "PASS_MARK", "InvalidSubmission",
           "check_model_shapes", "grade", "passed", "score_model"]


class CannotGrade(RuntimeError):
    """The grader cannot grade anything here; the message, from its "Cannot grade" line, says why."""


def check_keras_version(version=None):
    """Raise CannotGrade unless Keras ``version`` (default: the imported one) has a safe_mode to trust."""
    if version is None:
        import keras

        version = getattr(keras, "__version__", "")
    version = str(version or "")
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or tuple(map(int, found.groups())) < MIN_KERAS:
        floor = ".".join(map(str, MIN_KERAS))
        raise CannotGrade(
            f"Cannot grade: Keras {version or '(version unknown)'} is installed, and before "
            f"{floor} a model file can run code even when loaded with safe_mode "
            f"(CVE-2025-1550, CVE-2025-8747, CVE-2025-9906). No submission was loaded.\n"
            f"Upgrade it: pip install 'keras>={floor}'")


def installed_keras_version():
    """Return the installed Keras' version without importing it (and TensorFlow), or None."""
    from importlib import metadata

    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None


def check_before_loading(path):
    """Run the checks that need no Keras: a .keras file, its zip entries, no code in its
    configuration; return that configuration or raise InvalidSubmission saying why not."""
    path = Path(path)
    if not path.is_file():
        raise InvalidSubmission(f"{path} is not a file")
    if path.suffix.lower() != ".keras":  # MODEL.KERAS too: Keras reads it from a copy
        raise InvalidSubmission(f"{path.name} is not a .keras file; save the model with "
                                "model.save('model.keras')")
    return safety.read_configuration(path)  # zip limits and the code scan


def load_submission(path):
    """Load a submitted ``.keras`` model safely; raise InvalidSubmission saying why it cannot be."""
    path = Path(path)
    configuration = check_before_loading(path)
    check_keras_version()  # before Keras deserializes anything from the file
    safety.check_sizes(path, configuration)  # parameters and weights arrays, unallocated
    import tempfile

    import keras

    with tempfile.TemporaryDirectory(prefix="submission-") as scratch:
        try:
            # Loaded from a copy without compile settings: compile=False skips the model's
            # own, but Keras would still compile nested models, creating their metrics.
            plain = safety.write_without_compile_configs(path, configuration,
                                                         Path(scratch) / "model.keras")
            model = keras.saving.load_model(plain, compile=False, safe_mode=True)
        except Exception as e:  # Keras raises many types; all mean "cannot load it safely"
            reason = " ".join(str(e).split())[:400] or type(e).__name__
            raise InvalidSubmission(f"{path.name} cannot be loaded safely: {reason}") from e
    check_model_shapes(model)
    return model








@dataclass
class Report:
    """The verdict on one submission."""

    submission: str
    status: str  # "pass", "fail" or "invalid"
    grade: float | None = None
    pass_mark: float = PASS_MARK
    iou: dict = field(default_factory=dict)
    dice: dict = field(default_factory=dict)
    message: str = ""
    test_split: str = ""  # which data it was graded on, in words
    test_set: dict = field(default_factory=dict)  # and by name, SHA-256 and image count
    resources: dict = field(default_factory=dict)  # seconds and memory the grading took

    def __post_init__(self):
        # A file name that is not valid UTF-8 reaches the name and the message as surrogates.
        self.submission, self.message = printable(self.submission), printable(self.message)

    def text(self):
        """Return the report as lines a person reads."""
        lines = [f"Submission: {self.submission}"]
        if self.status == "invalid":
            lines.append(f"INVALID: {self.message}")
            return "\n".join(lines)
        lines.append(f"{'digit':<6} {'IoU':>6} {'Dice':>6}")
        for digit in DIGITS:
            lines.append(f"{digit:<6} {self.iou[str(digit)]:6.3f} {self.dice[str(digit)]:6.3f}")
        lines.append(f"Grade: {self.grade:.2f} (10 x the sum of the digit IoUs; pass above "
                     f"{self.pass_mark:.0f}): {self.status.upper()}")
        return "\n".join(lines)


def fixed_test_split(quick=None, url=None, root=None):
    """Return the fixed M2NIST test split (images, labels) that learners see in notebook 4."""
    return m2nist.load_m2nist(url=url, quick=quick, root=root)["test"]




def report_for_scores(name, scores):
    """Turn the scores of one model into its graded report."""
    value = grade(scores)
    return Report(name, "pass" if passed(value) else "fail", round(value, 2),
                  iou={str(d): float(np.nan_to_num(scores.iou[d])) for d in DIGITS},
                  dice={str(d): float(np.nan_to_num(scores.dice[d])) for d in DIGITS})


def grade_file(path, test_data, name=None):
    """Grade one submitted file against ``test_data`` = (images, labels); return its Report.

    It runs in this process: the grader calls it inside a worker with memory and time limits.
    """
    name = name or str(path)
    try:
        model = load_submission(path)
        scores = score_model(model, *test_data)
    except CannotGrade:
        raise  # the grader's set-up, not this submission: no verdict
    except Exception as e:
        if limits.out_of_memory(e):
            return Report(name, "invalid", message=limits.memory_message(limits.memory_limit()))
        if isinstance(e, InvalidSubmission):
            return Report(name, "invalid", message=str(e))
        # A model that loads but cannot run, e.g. mismatched weights.
        return Report(name, "invalid", message=f"the model failed to run on the test images: "
                                               f"{type(e).__name__}: {str(e)[:300]}")
    return report_for_scores(name, scores)
