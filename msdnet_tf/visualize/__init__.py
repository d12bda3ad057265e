"""What each exit looks at: Grad-CAM grids, per-class pages, saliency, class models, HTML.

`visualize(source, out_dir)` draws every page of a run folder or ``.keras`` checkpoint (see
`msdnet_tf.visualize.pages` for the files). The modules, in the order a page is made:

* ``source``: the model, its run folder, its test set and the evaluation's files.
* ``selection``: which test images fill the grid and which class gets its own page.
* ``exits``: which exits and target layers; their Grad-CAM maps (`explain_exits`).
* ``cells``: the pictures (overlays, upscaled images) and the figure of cells they sit in.
* ``grid``: the images x exits grid and the comparison of models.
* ``figures``: per-class attention, saliency beside Grad-CAM, class models.
* ``charts``: the evaluation's per-exit and per-class accuracy.
* ``index``: ``index.html``.
* ``pages``: `visualize`, which runs all of the above page by page.
"""

from msdnet_tf.visualize.charts import plot_per_class_table, plot_per_exit_accuracy
from msdnet_tf.visualize.exits import LAYER_CHOICES, ExitMaps, explain_exits
from msdnet_tf.visualize.figures import class_attention, class_model_page, saliency_page
from msdnet_tf.visualize.grid import compare_models, exit_grid
from msdnet_tf.visualize.index import write_index
from msdnet_tf.visualize.pages import PAGES, visualize, visualize_run
from msdnet_tf.visualize.selection import resolve_classes, select_images
from msdnet_tf.visualize.source import Results, open_source, test_results

__all__ = [
    "LAYER_CHOICES",
    "PAGES",
    "ExitMaps",
    "Results",
    "class_attention",
    "class_model_page",
    "compare_models",
    "exit_grid",
    "explain_exits",
    "open_source",
    "test_results",
    "plot_per_class_table",
    "plot_per_exit_accuracy",
    "resolve_classes",
    "saliency_page",
    "select_images",
    "visualize",
    "visualize_run",
    "write_index",
]
