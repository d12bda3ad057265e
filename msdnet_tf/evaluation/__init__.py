"""What each exit gets right: per-exit and per-class accuracy, difficulty, budgeted evaluation.

Pure NumPy analysis of the per-exit outputs a multi-exit (anytime) classifier has already
produced, plus file writers and matplotlib plots; importing this package loads no TensorFlow
(matplotlib is imported only when a plot is drawn). The TensorFlow side, running a model over a
data set to get those outputs and writing the run's report, is `msdnet_tf.evaluation.predict`
(`predict_probabilities`, `evaluate_run`), imported on its own.

Where things are:

* `inputs`: the checks of ``scores`` / ``probs`` (K, N, C), ``labels``, ``cumulative_flops``.
* `metrics`: softmax, predictions, confidences, per-exit top-k, ensembles, the anytime curve.
* `classes`: per-class accuracy of every exit (the Grad-CAM blog's Table 1).
* `difficulty`: how many exits get each sample right; the hardest / easiest samples.
* `budgeted`: exit proportions, thresholds on validation, the exit rule, budgeted evaluation.
* `tables`: Markdown tables, CSV / JSON writers and their readers.
* `plots`: heat map, difficulty histogram, anytime and budgeted curves.
* `report`: `write_report`, all of the above into one run folder.

No NaN is ever returned: an accuracy that is undefined (a class without samples) is a masked
entry in arrays, ``None`` in records and JSON, an empty cell in CSV files and a blank cell in
plots.

Example:
    >>> probs = softmax(logits)                  # (K, N, C), e.g. from the model's K outputs
    >>> summary = write_report("runs/x", probs, labels, class_names, cumulative_flops, val_probs)
    >>> print(per_exit_markdown(summary["per_exit"]))

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from msdnet_tf.evaluation.budgeted import (
    BudgetedResult,
    budgeted_evaluate,
    budgeted_sweep,
    budgeted_thresholds,
    exit_indices,
    exit_proportions,
    exit_targets,
)
from msdnet_tf.evaluation.classes import PerClassAccuracy, per_class_accuracy
from msdnet_tf.evaluation.difficulty import (
    SampleDifficulty,
    sample_difficulty,
    select_by_difficulty,
)
from msdnet_tf.evaluation.inputs import PROB_ATOL
from msdnet_tf.evaluation.metrics import (
    anytime_curve,
    confidences,
    ensemble_accuracy,
    ensemble_probs,
    exit_names,
    per_exit_summary,
    per_exit_topk,
    predictions,
    softmax,
)
from msdnet_tf.evaluation.plots import (
    plot_anytime,
    plot_budgeted,
    plot_difficulty_histogram,
    plot_per_class,
)
from msdnet_tf.evaluation.report import write_report
from msdnet_tf.evaluation.tables import (
    per_class_markdown,
    per_exit_markdown,
    read_budgeted_json,
    read_difficulty_csv,
    write_budgeted_json,
    write_difficulty_csv,
    write_per_class_csv,
    write_per_exit_csv,
    write_per_exit_json,
)

__all__ = [
    "PROB_ATOL",
    "BudgetedResult",
    "PerClassAccuracy",
    "SampleDifficulty",
    "anytime_curve",
    "budgeted_evaluate",
    "budgeted_sweep",
    "budgeted_thresholds",
    "confidences",
    "ensemble_accuracy",
    "ensemble_probs",
    "exit_indices",
    "exit_names",
    "exit_proportions",
    "exit_targets",
    "per_class_accuracy",
    "per_class_markdown",
    "per_exit_markdown",
    "per_exit_summary",
    "per_exit_topk",
    "plot_anytime",
    "plot_budgeted",
    "plot_difficulty_histogram",
    "plot_per_class",
    "predictions",
    "read_budgeted_json",
    "read_difficulty_csv",
    "sample_difficulty",
    "select_by_difficulty",
    "softmax",
    "write_budgeted_json",
    "write_difficulty_csv",
    "write_per_class_csv",
    "write_per_exit_csv",
    "write_per_exit_json",
    "write_report",
]
