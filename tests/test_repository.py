"""The repository speaks of the course, never of how it was made."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Words of a development log: work sessions, the numbers of the tasks that built the course,
# other people's jobs. ("The test session" or a Colab session are fine; so are links to
# upstream bug reports, whose paths read "issues/123".)
MADE = re.compile(r"\b(th(?:is)|previous|earlier|next|that|one) session\b|\bsessions? [0-9]+|"
                  r"\b(issue|task|ticket) #?[0-9]+|engineers' (training )?jobs|"
                  r"did not fit in the session", re.I)


def tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk it
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                 and not {".git", ".venv", "data", "executed"} & set(p.relative_to(ROOT).parts)]
    for name in filter(None, names):
        path = ROOT / name
        if path.suffix in {".py", ".md", ".ipynb", ".toml", ".txt", ".yml", ".yaml", ".json",
                           ".sh", ".cfg", ""} and path.is_file():
            yield path


def test_no_word_about_how_the_project_was_made():
    found = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if MADE.search(line) and path.name != "test_repository.py":
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


def test_the_pattern_catches_a_development_log_and_passes_the_course():
    # Written in pieces, so that this file does not itself read as such a log.
    for log in ("measured in sess" "ion 9", "not run in th" "is session", "before iss" "ue 18",
                "(iss" "ue 17)", "2 cores shared with five other engin" "eers' jobs"):
        assert MADE.search(log), log
    for fine in ("restart the session", "the test session serves archives",
                 "github.com/tensorflow/tensorflow/issues/123", "a Colab session"):
        assert not MADE.search(fine), fine


def test_helpers_import_tensorflow_and_keras_at_the_top_like_any_keras_code():
    # The one exception is the environment check, which must run before TensorFlow loads and
    # report a broken install instead of failing on it.
    import ast

    late = []
    for path in sorted((ROOT / "helpers").glob("*.py")):
        if path.name == "environment.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    names = ([a.name for a in inner.names] if isinstance(inner, ast.Import)
                             else [inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
                    if any(n.split(".")[0] in {"tensorflow", "keras", "tensorflow_datasets",
                                               "tensorflow_hub", "grader"} for n in names):
                        late.append(f"{path.name}:{inner.lineno} in {node.name}()")
    assert late == [], late


def test_the_root_conftest_leaves_tensorflow_to_the_test_processes():
    # pytest's main process (xdist's controller) loads it before any worker starts: importing
    # TensorFlow there would add seconds to every run, the fast tier's included.
    import sys

    code = ("import sys; sys.path.insert(0, '.'); import conftest; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
