"""``python -m grader``: grade one model file or a class's folder (``grader.cli``)."""

import sys

from grader.cli import main

sys.exit(main())
