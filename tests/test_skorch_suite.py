"""skorch's own tests, run with RobustNetClassifier in place of NeuralNetClassifier.

The test files of the installed skorch version come from its source
distribution on PyPI (``pip download --no-binary :all: --no-deps``), cached in
``.skorch-suite/<version>/`` (ignored by git; delete it to fetch again). They
run in a separate pytest process, where a ``conftest.py`` written next to them
replaces ``skorch.NeuralNetClassifier`` by :class:`skrobust.RobustNetClassifier`
(the tests import the class from ``skorch`` inside their fixtures). Their
outcomes are compared with :data:`EXPECTED_FAILURES`, which gives the reason for
each test that is expected to fail; a test that fails without an entry, or an
entry whose test now passes, fails here. Without the network (or when the
download fails) the module is skipped with the reason.

Only part of skorch's suite runs (:data:`SELECTION`): skorch's tests fit many
small networks, and the whole of ``test_net.py`` and the callback tests take
far longer than the rest of this project's tests on a 2-core machine. The part
chosen is skorch's tests of ``NeuralNetClassifier`` (not those of
``NeuralNetBinaryClassifier``, which is not substituted) and of the callbacks
that change training from the outside (``EarlyStopping``,
``InputShapeSetter``). Set ``SKROBUST_SKORCH_SUITE`` to a space-separated list of
test paths or node ids (relative to ``skorch/tests``) to run others, e.g.
``test_net.py``; the table then still applies to the tests it names.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import skorch

ROOT = Path(__file__).resolve().parents[1]
SUITE_DIR = ROOT / ".skorch-suite" / skorch.__version__
TESTS_DIR = SUITE_DIR / "skorch" / "tests"

#: What runs by default, relative to skorch/tests.
SELECTION = (
    "test_classifier.py::TestNeuralNet",
    "callbacks/test_training.py::TestEarlyStopping",
    "callbacks/test_training.py::TestInputShapeSetter",
)

#: Seconds for the download and for the run of the selected tests.
DOWNLOAD_TIMEOUT = 300
RUN_TIMEOUT = 1200

# ----------------------------------------------------------------- reasons
TRAIN_SPLIT = (
    "train_split=None by default (every row is trained on and scored): no valid_loss or "
    "valid_acc unless a split is set; skorch's default is ValidSplit(5)."
)
PER_SAMPLE_LOSS = (
    "The criterion must give one loss per sample (reduction='none'): the weights need "
    "each sample's loss; a criterion built with reduction='mean' or 'sum' is refused."
)
DATA_PATH = (
    "fit validates and encodes arrays as a scikit-learn classifier does (X becomes "
    "float32, y is encoded to 0..n_classes-1, n_features_in_ is checked): inputs that "
    "skorch passes through untouched (dicts, lists of tensors, torch Datasets, "
    "y=None) are refused or converted."
)
MODULE_CHECK = (
    "The module's output is checked before training (an extra forward pass on two rows): "
    "it must give one logit per class of y, even with max_epochs=0."
)
LABELS = (
    "The labels are validated: y must only hold labels of `classes` when it is given "
    "(skorch lets them disagree)."
)
SUBSTITUTION = (
    "An artefact of the substitution: the test checks skorch's class name, its "
    "defaults or its __init__ signature, or patches skorch's class."
)

EMPTY_CLASSES = (
    "classes=[] means the labels come from y, so classes_ exists after fit (skorch: the "
    "net then has no classes_); the labels are needed to encode y."
)

_CLS = "test_classifier.py::TestNeuralNet::"
_EARLY = "callbacks/test_training.py::TestEarlyStopping::"
_SHAPE = "callbacks/test_training.py::TestInputShapeSetter::"

#: skorch test (node id relative to skorch/tests) -> why it fails here.
EXPECTED_FAILURES = {
    # The test replaces criterion_ by a mock of NLLLoss() with reduction="mean".
    _CLS + "test_takes_log_with_nllloss": PER_SAMPLE_LOSS,
    _CLS + "test_takes_no_log_without_nllloss": PER_SAMPLE_LOSS,
    # A module with 2 outputs fitted on 8 or 10 classes (max_epochs=0).
    _CLS + "test_non_binary_classes_set_by_default": MODULE_CHECK,
    _CLS + "test_classes_data_torch_tensor": MODULE_CHECK,
    _CLS + "test_classes_with_gaps": MODULE_CHECK,
    _CLS + "test_pass_classes_explicitly_overrides": LABELS,
    _CLS + "test_classes_are_set_with_tensordataset_explicit_y": DATA_PATH,
    _CLS + "test_classes_are_set_with_tensordataset_implicit_y": DATA_PATH,
    _CLS + "test_error_when_classes_could_not_be_inferred": DATA_PATH,
    _CLS + "test_pass_empty_classes_raises[classes0]": EMPTY_CLASSES,
    _CLS + "test_pass_empty_classes_raises[classes1]": EMPTY_CLASSES,
    # EarlyStopping on valid_loss / valid_roc_auc with the default train_split.
    _EARLY + "test_typical_use_case_nonstop": TRAIN_SPLIT,
    _EARLY + "test_typical_use_case_stopping": TRAIN_SPLIT,
    _EARLY + "test_custom_scoring_nonstop": TRAIN_SPLIT,
    _EARLY + "test_custom_scoring_stop": TRAIN_SPLIT,
    _EARLY + "test_stopping_big_absolute_threshold": TRAIN_SPLIT,
    _EARLY + "test_weights_restore": DATA_PATH,  # fits on a TensorDataset
    _SHAPE + "test_one_dimensional_x_raises": DATA_PATH,  # scikit-learn's 1-D message
    # They patch skorch.classifier.NeuralNetClassifier.initialize_module, which
    # RobustNetClassifier overrides.
    _SHAPE + "test_no_module_reinit_when_already_correct": SUBSTITUTION,
    _SHAPE + "test_no_module_reinit_partial_fit": SUBSTITUTION,
}


# ------------------------------------------------------------------ fetching
_CONFTEST = '''\
"""Written by skrobust's tests/test_skorch_suite.py: runs skorch's tests on RobustNetClassifier."""
import os
import sys
import types

import skorch

# The tests import skorch.tests.conftest: make skorch.tests these files.
_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skorch", "tests")
_package = types.ModuleType("skorch.tests")
_package.__path__ = [_TESTS]
sys.modules["skorch.tests"] = _package
skorch.tests = _package

# flaky (a test requirement of skorch's) retries one test; without it, run it once.
try:
    import flaky  # noqa: F401
except ImportError:
    _flaky = types.ModuleType("flaky")
    _flaky.flaky = lambda *args, **kwargs: (lambda test: test)
    sys.modules["flaky"] = _flaky

if os.environ.get("SKROBUST_SUBSTITUTE", "1") == "1":
    from skrobust import RobustNetClassifier

    skorch.NeuralNetClassifier = RobustNetClassifier

_OUTCOMES = {}


def pytest_runtest_logreport(report):
    """Record one outcome per test: passed, failed, skipped or xfailed."""
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        outcome = "xpassed" if hasattr(report, "wasxfail") else "passed"
    else:
        return
    if _OUTCOMES.get(report.nodeid) != "failed":
        _OUTCOMES[report.nodeid] = outcome


def pytest_collectreport(report):
    if report.failed:  # a file that does not import is a failure of its own
        _OUTCOMES[report.nodeid] = "failed"


def pytest_sessionfinish(session):
    path = os.environ.get("SKROBUST_SUITE_REPORT")
    if path:
        import json

        with open(path, "w") as fh:
            json.dump(_OUTCOMES, fh, indent=0, sort_keys=True)
'''


def _write_runner(directory):
    """The substituting conftest.py, and an empty pytest.ini that keeps ours out."""
    (directory / "conftest.py").write_text(_CONFTEST)
    (directory / "pytest.ini").write_text("[pytest]\n")


def _fetch():
    """skorch's test files for the installed version, or a skip with the reason."""
    if (TESTS_DIR / "test_classifier.py").exists():
        _write_runner(SUITE_DIR)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               "--disable-pip-version-check", "--quiet",
               f"skorch=={skorch.__version__}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=DOWNLOAD_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"could not download skorch=={skorch.__version__}'s sdist: {exc}")
        archives = list(Path(tmp).glob("skorch-*.tar.gz"))
        if proc.returncode or not archives:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            pytest.skip(f"could not download skorch=={skorch.__version__}'s sdist "
                        f"(offline?): {' | '.join(tail)}")
        SUITE_DIR.parent.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=SUITE_DIR.parent))
        try:
            with tarfile.open(archives[0]) as tar:
                members = [m for m in tar.getmembers()
                           if re.match(r"[^/]+/skorch/tests/", m.name) and m.isfile()]
                tar.extractall(staging, members=members, filter="data")
            (tests,) = staging.glob("*/skorch/tests")
            target = staging / "suite"
            (target / "skorch").mkdir(parents=True)
            tests.rename(target / "skorch" / "tests")
            _write_runner(target)
            if not SUITE_DIR.exists():
                target.rename(SUITE_DIR)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Run the selected skorch tests once; their outcomes by node id."""
    _fetch()
    selection = os.environ.get("SKROBUST_SKORCH_SUITE", "").split() or SELECTION
    report = tmp_path_factory.mktemp("skorch-suite") / "outcomes.json"
    env = {**os.environ, "SKROBUST_SUBSTITUTE": "1", "SKROBUST_SUITE_REPORT": str(report)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
           str(SUITE_DIR / "pytest.ini"), "--rootdir", str(SUITE_DIR), "-W", "ignore",
           *(f"skorch/tests/{s}" for s in selection)]
    proc = subprocess.run(cmd, cwd=SUITE_DIR, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    if not report.exists():
        pytest.fail(f"skorch's tests did not run (exit {proc.returncode}):\n"
                    + proc.stdout[-3000:] + proc.stderr[-3000:])
    prefix = "skorch/tests/"
    return {k.removeprefix(prefix): v
            for k, v in json.loads(report.read_text()).items()}


def test_no_unexpected_failures(suite):
    unexpected = sorted(k for k, v in suite.items()
                        if v == "failed" and k not in EXPECTED_FAILURES)
    assert not unexpected, (
        f"{len(unexpected)} of skorch's tests fail with RobustNetClassifier and have no "
        "entry in EXPECTED_FAILURES:\n  " + "\n  ".join(unexpected))


def test_expected_failures_still_fail(suite):
    fixed = sorted(k for k, v in suite.items() if v == "passed" and k in EXPECTED_FAILURES)
    assert not fixed, (
        "These skorch tests now pass: remove them from EXPECTED_FAILURES:\n  "
        + "\n  ".join(fixed))


def test_the_selection_ran(suite):
    passed = sum(v == "passed" for v in suite.values())
    assert passed, f"none of skorch's selected tests passed: {suite}"
