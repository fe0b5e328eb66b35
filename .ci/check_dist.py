"""Check the built wheel and sdist, then the wheel as installed.

    python3 .ci/check_dist.py archives DIST_DIR     # what the files hold
    VENV/bin/python .ci/check_dist.py installed     # run from outside the source tree

``archives`` checks that the LICENSE, the metadata and every tracked module of
skrobust are in the wheel and the sdist, named with the version from
skrobust/__init__.py. ``installed`` imports skrobust from site-packages, not
from the source tree, and runs a tiny fit.
"""

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fail(message):
    raise SystemExit(f"check_dist: {message}")


def _source_version():
    text = (ROOT / "skrobust" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.MULTILINE)
    if match is None:
        _fail("skrobust/__init__.py has no __version__ = \"...\" line.")
    return match[1]


def _check_metadata(text, where):
    for line in ("License-Expression: BSD-3-Clause", "License-File: LICENSE"):
        if line not in text.splitlines():
            _fail(f"{where} lacks the line {line!r}.")


def check_archives(dist):
    version = _source_version()
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        _fail(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}.")
    wheel, sdist = wheels[0], sdists[0]
    if not wheel.name.startswith(f"skrobust-{version}-"):
        _fail(f"{wheel.name} does not carry the version {version} of skrobust/__init__.py.")
    if sdist.name != f"skrobust-{version}.tar.gz":
        _fail(f"{sdist.name} does not carry the version {version} of skrobust/__init__.py.")

    tracked = subprocess.run(
        ["git", "ls-files", "skrobust/*.py"], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout.split()
    if not tracked:
        _fail("git ls-files found no skrobust/*.py.")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"skrobust-{version}.dist-info"
        if f"{info}/licenses/LICENSE" not in names:
            _fail(f"{wheel.name} has no {info}/licenses/LICENSE.")
        if archive.read(f"{info}/licenses/LICENSE") != (ROOT / "LICENSE").read_bytes():
            _fail(f"the LICENSE in {wheel.name} differs from the repository's.")
        _check_metadata(archive.read(f"{info}/METADATA").decode(), f"{wheel.name}'s METADATA")
    missing = sorted(set(tracked) - names)
    if missing:
        _fail(f"{wheel.name} lacks {missing}.")

    with tarfile.open(sdist) as archive:
        prefix = f"skrobust-{version}/"
        names = {name.removeprefix(prefix) for name in archive.getnames()}
        pkg_info = archive.extractfile(prefix + "PKG-INFO").read().decode()
    missing = sorted({"LICENSE", "README.md", "pyproject.toml", *tracked} - names)
    if missing:
        _fail(f"{sdist.name} lacks {missing}.")
    _check_metadata(pkg_info, f"{sdist.name}'s PKG-INFO")
    print(f"check_dist: {wheel.name} and {sdist.name} hold LICENSE, metadata and "
          f"{len(tracked)} modules")


def check_installed():
    import pickle
    from importlib.metadata import files, metadata, version

    import numpy as np
    from sklearn.datasets import make_classification

    import skrobust
    from skrobust import RobustNetClassifier

    location = Path(skrobust.__file__).resolve()
    if ROOT in location.parents or Path(sys.prefix).resolve() not in location.parents:
        _fail(f"skrobust was imported from {location}, not from {sys.prefix}.")
    if skrobust.__version__ != version("skrobust"):
        _fail(f"__version__ {skrobust.__version__} != installed {version('skrobust')}.")
    meta = metadata("skrobust")
    if meta["License-Expression"] != "BSD-3-Clause" or "LICENSE" not in meta.get_all(
            "License-File", []):
        _fail("the installed metadata lacks License-Expression or License-File.")
    if not any(path.name == "LICENSE" for path in files("skrobust")):
        _fail("the installed distribution has no LICENSE file.")

    # accelerate is not installed here: the error must name the extra to install.
    try:
        from skrobust.distributed import AcceleratedRobustNetClassifier  # noqa: F401
    except ImportError as exc:
        if "skrobust[distributed]" not in str(exc):
            _fail(f"the missing-accelerate error does not name skrobust[distributed]: {exc}")
    else:
        _fail("AcceleratedRobustNetClassifier imported although accelerate is not installed.")

    X, y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)
    net = RobustNetClassifier(
        max_epochs=3, warmup_epochs=1, verbose=0, random_state=0).fit(X, y)
    loaded = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    print(f"check_dist: skrobust {skrobust.__version__} from {location.parent}: "
          f"fit, predict and pickle ok (training accuracy {net.score(X, y):.2f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["archives"] and len(sys.argv) == 3:
        check_archives(Path(sys.argv[2]))
    elif sys.argv[1:] == ["installed"]:
        check_installed()
    else:
        _fail(__doc__)
