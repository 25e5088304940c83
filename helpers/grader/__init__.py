"""The assignment's grader, every grading concern in one place (the command: ``python -m helpers.grading``).

- ``scoring``: the rules: what a submission must be, how it is loaded safely and scored, its
  ``Report``; ``safety``: the checks of a model file before Keras loads it (no code, nothing
  too large); ``limits``: the memory a grading process may use.
- ``workers``: the processes that grade file after file under time and memory limits.
- ``testset``: the public test split, or a private test set built for a class.
- ``identity``: whose file it is, from Canvas, Moodle or plain folder names.
- ``tables``: the full table, the per-student and LMS tables, the feedback files.
- ``cli``: the command line.

``helpers.grading`` is its public face, the one the assignment notebook imports. Taught in
notebook 4.
"""
