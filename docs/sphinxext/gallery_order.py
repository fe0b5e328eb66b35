"""Order of the examples in the sphinx-gallery index: from first steps to details."""

import os

# File names in reading order; examples not listed come after these, by name.
EXAMPLE_ORDER = (
    "plot_quickstart.py",
    "plot_find_label_issues.py",
    "plot_pipeline_mixed_columns.py",
    "plot_grid_search.py",
    "plot_weights_over_epochs.py",
    "plot_robust_losses.py",
)


class ExampleOrder:
    """Sort key for ``within_subsection_order``: listed files first, then by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(filename)
        if name in EXAMPLE_ORDER:
            return (EXAMPLE_ORDER.index(name), name)
        return (len(EXAMPLE_ORDER), name)

    def __repr__(self):
        return f"<{type(self).__name__}>"
