"""Sphinx configuration of the skrobust documentation.

Build it from the repository root (warnings are errors)::

    .venv/bin/pip install -e ".[docs]"
    .venv/bin/python -m sphinx -W -b html docs docs/_build/html

The build works offline: no inventory of another project is fetched, so
references to scikit-learn, skorch or torch objects render as plain code.
The gallery scripts in ``examples/plot_*.py`` are run during the build (about
half a minute in all on two CPU cores); add ``-D plot_gallery=0`` to skip them.
"""

import os
import re
import sys
from importlib.util import find_spec

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "sphinxext"))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import skrobust  # noqa: E402

# -- Project -----------------------------------------------------------------
project = "skrobust"
author = "the skrobust developers"
copyright = "the skrobust developers"  # noqa: A001
release = skrobust.__version__
version = release

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip"]
default_role = "literal"
root_doc = "index"
pygments_style = "sphinx"

# -- autodoc / autosummary ----------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
add_module_names = False

# -- numpydoc -----------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Check our own docstrings while building; a failed check is a warning, and
# the build treats warnings as errors. The checks left out are matters of style
# (an extended summary, See Also and Examples on every object, a description
# for every return value, the grammar of the first word) rather than errors.
numpydoc_validation_checks = {
    "all",
    "ES01",  # no extended summary
    "SA01",  # no See Also section
    "EX01",  # no Examples section
    "GL08",  # object without a docstring (private helpers)
    "RT02",  # "Returns" entry that gives only a type
    "RT03",  # return value without a description
    "SS02",  # summary starting with a lower-case word (e.g. "skorch's ...")
    "SS05",  # summary starting with a third-person verb (e.g. "Rows whose ...")
    "PR08",  # parameter description starting with a lower-case word
}
# Only validate skrobust's objects (inherited skorch/torch members are not ours).
numpydoc_validation_exclude = {
    r"^(?!skrobust\.)",
    r"\.__\w+__$",
    # Constants documented with a ``#:`` comment: not a docstring to validate.
    r"\.(WEIGHTINGS|STATS|ENGINES|ACTIVATIONS|RULES|LOW_WEIGHT)$",
}

# -- sphinx-gallery -------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py|demo\.py",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "doc_module": ("skrobust",),
    "backreferences_dir": "gen_modules/backreferences",
    "exclude_implicit_doc": set(),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "min_reported_time": 0,
    "show_memory": False,
}

# The examples train small networks; on a machine whose cores are shared, one
# torch thread is several times faster than one per core. (This only affects
# the documentation build: the examples themselves leave the setting alone.)
torch.set_num_threads(1)

# -- HTML -----------------------------------------------------------------------
if find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        # The page's table of contents on the right, except on example pages:
        # their code needs the width. ("*" does not match across a "/".)
        "secondary_sidebar_items": {
            "*": ["page-toc", "sourcelink"],
            "user_guide/*": ["page-toc", "sourcelink"],
            "generated/*": ["page-toc", "sourcelink"],
            "auto_examples/*": [],
        },
        "footer_start": ["copyright"],
        "footer_end": ["sphinx-version"],
    }
    html_sidebars = {"index": []}
else:  # a plain build still works with Sphinx's default theme
    html_theme = "alabaster"
html_title = f"skrobust {release}"
html_show_sourcelink = True


# -- Pages that may or may not exist -------------------------------------------------
# Other parts of the project add some pages on their own schedule. A marker line
# in a toctree stands for the pages of its group that exist at build time, so
# neither a missing page nor a page outside every toctree breaks the build.
OPTIONAL_PAGES = {
    "index": {
        "optional-guide-pages": ("distributed", "bad_input_table"),
        "optional-reference-pages": ("benchmarks",),
    },
}


def _fill_markers(app, docname, source):
    """Replace the marker lines of a toctree with the pages that exist."""
    for marker, pages in OPTIONAL_PAGES.get(docname, {}).items():
        present = [p for p in pages if os.path.exists(os.path.join(app.srcdir, p + ".rst"))]
        source[0] = source[0].replace(f"   {marker}\n",
                                      "".join(f"   {p}\n" for p in present))


def _reread_pages_with_markers(app, env, added, changed, removed):
    return [name for name in OPTIONAL_PAGES if name in env.found_docs]


# -- Check that the API page lists every public name ------------------------------
PUBLIC_MODULES = ("skrobust", "skrobust.weighting", "skrobust.selection", "skrobust.memory",
                  "skrobust.engines", "skrobust.modules", "skrobust.losses", "skrobust.noise",
                  "skrobust.distributed", "skrobust.data")


def _check_api_page(app):
    """Warn (an error under ``-W``) for each name of a module's ``__all__`` not in api.rst."""
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger("skrobust.docs")
    with open(os.path.join(app.srcdir, "api.rst"), encoding="utf-8") as fh:
        listed = set(re.findall(r"^ {3}(\w+)\s*$", fh.read(), flags=re.M))
    top = set(skrobust.__all__)
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for obj in getattr(module, "__all__", ()):
            if obj not in listed and not (name != "skrobust" and obj in top):
                logger.warning("docs/api.rst does not list %s.%s", name, obj)


# -- Docstrings that scikit-learn generates ------------------------------------------
# ``set_score_request`` and friends are written by scikit-learn for every
# estimator; they refer to scikit-learn's glossary and user guide, which this
# site does not have.
_SKLEARN_DOCS = "https://scikit-learn.org/stable/"


def _rewrite_sklearn_references(app, what, name, obj, options, lines):
    if not name.endswith("_request"):
        return
    for i, line in enumerate(lines):
        line = re.sub(r":term:`([^`<]+)`", r"\1", line)
        line = re.sub(r":ref:`([^`<]+?) ?<metadata_routing>`",
                      rf"`\1 <{_SKLEARN_DOCS}metadata_routing.html>`__", line)
        line = line.replace(":ref:`sklearn:metadata_routing`",
                            f"`metadata routing <{_SKLEARN_DOCS}metadata_routing.html>`__")
        lines[i] = line


def setup(app):
    app.connect("builder-inited", _check_api_page)
    app.connect("autodoc-process-docstring", _rewrite_sklearn_references, priority=400)
    app.connect("source-read", _fill_markers)
    app.connect("env-get-outdated", _reread_pages_with_markers)
