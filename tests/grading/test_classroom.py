"""The GitHub Classroom template (``classroom/``), without GitHub.

The workflow is parsed and held to what Classroom reads (its name, its one job, permissions,
the bot guard) and to each action's documented inputs; its pins are requirements.txt's; and
its steps' commands run here, in a scratch copy of a learner's repository, as the command
grader runs them (``/bin/sh``, only PATH and HOME passed on), with the points added up as the
grading reporter adds them.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML: installed with papermill (requirements.txt)

REPO_DIR = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_DIR / "classroom"
WORKFLOW = TEMPLATE / ".github" / "workflows" / "classroom.yml"
COMMAND_GRADER = "classroom-resources/autograding-command-grader@v1"
REPORTER = "classroom-resources/autograding-grading-reporter@v1"
# The actions' documented inputs (their action.yml and README): name -> required.
COMMAND_GRADER_INPUTS = {"test-name": True, "setup-command": False, "command": True,
                         "timeout": False, "max-score": False}
REPORTER_INPUTS = {"runners": True}
CHECKOUT_INPUTS = {"lfs", "fetch-depth", "ref"}
SETUP_PYTHON_INPUTS = {"python-version", "cache", "cache-dependency-path"}


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow):
    return workflow["jobs"]["run-autograding-tests"]["steps"]


def graders(workflow):
    return [s for s in steps(workflow) if s.get("uses") == COMMAND_GRADER]


def test_the_workflow_is_the_one_classroom_reads(workflow):
    assert workflow["name"] == "Autograding Tests"
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in triggers
    assert workflow["permissions"] == {"checks": "write", "actions": "read", "contents": "read"}
    assert list(workflow["jobs"]) == ["run-autograding-tests"]
    job = workflow["jobs"]["run-autograding-tests"]
    assert job["if"] == "github.actor != 'github-classroom[bot]'"
    assert job["runs-on"] == "ubuntu-latest"
    assert steps(workflow)[-1]["uses"] == REPORTER  # the reporter comes last


def test_every_action_input_is_one_the_action_documents(workflow):
    used = {s["uses"] for s in steps(workflow) if "uses" in s}
    assert used == {"actions/checkout@v4", "actions/setup-python@v5", COMMAND_GRADER, REPORTER}
    for step in steps(workflow):
        given = step.get("with", {})
        if step.get("uses") == COMMAND_GRADER:
            assert set(given) <= set(COMMAND_GRADER_INPUTS), step
            assert all(name in given for name, required in COMMAND_GRADER_INPUTS.items() if required)
            assert 0 < float(given["timeout"]) <= 360  # minutes; the action allows 6 hours
            # The action reads max-score with parseInt: whole points only.
            assert isinstance(given["max-score"], int) and given["max-score"] >= 0
            assert re.fullmatch(r"[A-Za-z0-9]+", step["id"]), step["id"]
        elif step.get("uses") == REPORTER:
            assert set(given) == set(REPORTER_INPUTS)
        elif step.get("uses") == "actions/checkout@v4":
            assert set(given) <= CHECKOUT_INPUTS
        elif step.get("uses") == "actions/setup-python@v5":
            assert set(given) <= SETUP_PYTHON_INPUTS
            assert (TEMPLATE / given["cache-dependency-path"]).is_file()
    # The reporter reads each runner's result from <ID>_RESULTS, the ids listed in runners.
    ids = [s["id"] for s in graders(workflow)]
    reporter = steps(workflow)[-1]
    assert reporter["with"]["runners"] == ",".join(ids)
    assert reporter["env"] == {f"{i.upper()}_RESULTS": f"${{{{ steps.{i}.outputs.result }}}}"
                               for i in ids}
    # Points: a pass earns 70, each band of ten above it 10, for 100 in all.
    assert {s["id"]: s["with"]["max-score"] for s in graders(workflow)} == {
        "model": 0, "pass": 70, "above70": 10, "above80": 10, "above90": 10}
    # The feedback step runs whatever the grading steps said, before the reporter.
    feedback = steps(workflow)[-2]
    assert feedback["if"] == "always()" and "GITHUB_STEP_SUMMARY" in feedback["run"]


def test_the_grader_is_set_up_with_exactly_the_pins_of_requirements_txt(workflow):
    pinned = {n.lower(): v for n, v in re.findall(r"^\s*([A-Za-z0-9][\w.-]*)==(\S+)",
                                                  (REPO_DIR / "requirements.txt").read_text(), re.M)}
    listed = (TEMPLATE / ".github" / "classroom" / "requirements-grader.txt").read_text()
    installed = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", listed, re.M))
    # tensorflow-cpu: the same release as tensorflow without the GPU kernels (no GPU there).
    assert {("tensorflow" if n == "tensorflow-cpu" else n): v for n, v in installed.items()} == {
        n: pinned[n] for n in ("tensorflow", "keras", "h5py", "numpy", "pillow", "tqdm")}
    from grader import gradescope  # the Gradescope bundle installs the same list

    assert re.findall(r"^\S+==\S+$", gradescope.grader_requirements(pinned), re.M) == \
        re.findall(r"^\S+==\S+$", listed, re.M)
    setup = (TEMPLATE / ".github" / "classroom" / "setup-grader.sh")
    installs = [line.strip() for line in setup.read_text().splitlines()
                if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs == [
        ".grader/venv/bin/python -m pip install --prefer-binary -r .github/classroom/requirements-grader.txt",
        '.grader/venv/bin/python -m pip install --no-deps "git+${COURSE_REPOSITORY}@${COURSE_REF}"']
    assert subprocess.run(["bash", "-n", str(setup)]).returncode == 0
    (model,) = [s for s in graders(workflow) if s["id"] == "model"]
    assert model["with"]["setup-command"] == "bash .github/classroom/setup-grader.sh"


def run_steps(workflow, repo):
    """Run the grading steps' commands as the command grader does; return {id: (code, points)}."""
    outcome = {}
    for step in graders(workflow):
        # Only PATH and HOME reach a command (the action's env); the course's test data comes
        # from the loopback server here, as COURSE_M2NIST_URL names it.
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
               "COURSE_QUICK": "1", "COURSE_M2NIST_URL": os.environ["COURSE_M2NIST_URL"]}
        run = subprocess.run(["/bin/sh", "-c", step["with"]["command"]], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=300)
        points = step["with"]["max-score"] if run.returncode == 0 else 0
        outcome[step["id"]] = (run.returncode, points, run.stdout + run.stderr)
    return outcome


def learners_repository(tmp_path, files):
    repo = tmp_path / "repo"
    shutil.copytree(TEMPLATE / ".github", repo / ".github")
    # The environment setup-grader.sh makes, standing in: this checkout's.
    venv_bin = repo / ".grader" / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv_bin / "python").chmod(0o755)
    for name, content in files.items():
        (repo / name).write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    return repo


def feedback_summary(workflow, repo, tmp_path):
    summary = tmp_path / "summary.md"
    run = subprocess.run(["bash", "-e", "-c", steps(workflow)[-2]["run"]], cwd=repo,
                         env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return summary.read_text()


@pytest.mark.slow
def test_a_committed_model_is_graded_once_and_its_points_reported_with_feedback(workflow, tmp_path):
    from grading_models import GOOD_MODEL

    repo = learners_repository(tmp_path, {"model.keras": GOOD_MODEL, "README.md": b"# M2NIST\n",
                                          "assignment.ipynb": b"{}"})
    outcome = run_steps(workflow, repo)
    code, _, log = outcome["model"]
    assert code == 0, log
    grade = float(re.search(r"grade (\d+\.\d\d)", log).group(1))
    expected = {"pass": 60, "above70": 70, "above80": 80, "above90": 90}
    for step, mark in expected.items():
        assert outcome[step][0] == (0 if round(grade, 2) > mark else 1), outcome[step][2]
    points = sum(p for _, p, _ in outcome.values())
    assert points == (0 if grade <= 60 else 70 + 10 * sum(grade > m for m in (70, 80, 90)))
    summary = feedback_summary(workflow, repo, tmp_path)
    verdict = "PASS" if grade > 60 else "FAIL"
    assert summary.startswith(f"## M2NIST assignment: {verdict}, grade {grade:.2f}")
    assert "| 9 |" in summary and "Test set: " in summary and "SHA-256" in summary
    # Hidden folders (the grader's environment, .github) are never graded.
    assert "Graded file: model.keras." in summary


def test_without_a_model_every_step_fails_with_what_to_commit(workflow, tmp_path):
    # A verdict committed (or left from a run on the learner's machine) never counts.
    committed = ('{"reports": [{"submission": "m.keras", "status": "pass", "grade": 99.0}], '
                 '"counted": 0}')
    repo = learners_repository(tmp_path, {"model.zip": b"PK\x05\x06" + bytes(18),
                                          ".grader/verdict.json": committed.encode()})
    outcome = run_steps(workflow, repo)
    assert {step: (code, points) for step, (code, points, _) in outcome.items()} == {
        "model": (1, 0), "pass": (1, 0), "above70": (1, 0), "above80": (1, 0), "above90": (1, 0)}
    summary = feedback_summary(workflow, repo, tmp_path)
    assert summary.startswith("## M2NIST assignment: not graded")
    assert "model.zip is a zip archive (it holds no .keras file)" in summary
    # And when the grader could not even be set up, the summary says so.
    (repo / ".grader" / "venv" / "bin" / "python").unlink()
    assert "The grader could not be set up" in feedback_summary(workflow, repo, tmp_path)
