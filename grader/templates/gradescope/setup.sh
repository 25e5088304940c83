#!/usr/bin/env bash
# The M2NIST autograder's set-up. Gradescope runs it once, as root, when it builds the
# autograder's image (Ubuntu; its default base image is 22.04). It makes a virtual environment
# with exactly the packages the grader needs on a CPU, at the versions the course pins
# (requirements-grader.txt: no notebooks, no JupyterLab), and puts the grader (course/, in this
# bundle) on its path. Nothing from a learner is here yet: run_autograder grades them later.
#
# AUTOGRADER_ROOT stands for /autograder, GRADER_VENV for the environment's folder (default
# /autograder/grader-venv) and GRADER_PYTHON for the Python to build it with (default: the
# first python3.13, python3.12, python3.11 or python3 of at least 3.11 found): set them to try
# the bundle elsewhere. pip honours its own PIP_* variables (an index, a proxy).
set -euo pipefail

ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="${GRADER_VENV:-$ROOT/grader-venv}"

find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
                && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

PYTHON="${GRADER_PYTHON:-$(find_python || true)}"
if [ -z "$PYTHON" ]; then
    # Ubuntu 22.04 ships Python 3.10, and NumPy 2.4 needs 3.11: Ubuntu's own python3.11.
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi
echo "Python for the grader: $PYTHON ($("$PYTHON" --version 2>&1))"

if ! "$PYTHON" -m venv "$VENV"; then
    # Debian and Ubuntu keep venv's pip apart, in python3.X-venv.
    version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "python${version}-venv"
    "$PYTHON" -m venv --clear "$VENV"
fi

# Exactly the pinned packages (and what they themselves require).
"$VENV/bin/python" -m pip install --prefer-binary -r "$SOURCE/requirements-grader.txt"

# The grader: its source in this bundle, on the environment's path (run_autograder also puts
# it first on PYTHONPATH, so that an installed copy can never shadow it).
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$SOURCE/course" > "$SITE/m2nist-grader.pth"

# Fail the build now, not at the first submission, if anything is missing.
"$VENV/bin/python" -c 'import grader.gradescope, grader.workers, keras, tensorflow; print("grader ready: Keras", keras.__version__, "TensorFlow", tensorflow.__version__)'
