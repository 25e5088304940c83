"""``python -m helpers.grader`` is ``python -m helpers.grading``."""

import sys

from helpers.grader.cli import main

sys.exit(main())
