"""The course maintainers' tools, each a command run from the repository's root; not installed.

- ``python -m maintainer.figures``: draws the architecture figures in ``notebooks/figures/``
  from the notebooks' own models.
- ``python -m maintainer.run_notebooks``: executes notebooks headless (papermill), as a learner
  would run them, into ``executed/``.
- ``python -m maintainer.student_notebook``: writes the assignment's student notebook from the
  solution.
- ``maintainer.notebook_code``: pulls functions and exercise blocks out of a notebook, for the
  tests and benchmarks.
"""
