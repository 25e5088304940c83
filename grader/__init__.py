"""The course's grader for the M2NIST assignment, for instructors: ``python -m grader``.

It grades one ``.keras`` file or a class's folder of them under time and memory limits,
never running a submission's code, and writes the tables an LMS imports. The assignment's
rule (shapes, grade, pass mark, scoring) is the lesson's, ``helpers.grading``; this package
imports ``helpers`` and never the reverse. Its main process never imports TensorFlow: only
its workers do. See ``grader/README.md``.

- ``safety``: the checks of a model file before Keras loads it (no code, nothing too large);
  ``limits``: the memory a grading process may use.
- ``scoring``: a file loaded safely, scored by the rule, and its ``Report``.
- ``workers``: the processes that grade file after file under time and memory limits.
- ``testset``: the public test split, or a private test set built for a class.
- ``identity``: whose file it is, from Canvas, Moodle or plain folder names.
- ``tables``: the full table, the per-student and LMS tables, the feedback files.
- ``cli``: the command line.
- ``gradescope``: the Gradescope autograder bundle, and the grading it runs there;
  ``classroom``: the steps of a GitHub Classroom workflow (templates in ``classroom/``).
"""
