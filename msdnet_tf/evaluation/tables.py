"""Tables in and out: Markdown renderings, CSV and JSON writers, and the readers of those files.

No NaN is ever written: an undefined accuracy (a class without samples, top-5 with fewer than
5 classes) is ``None`` in records, ``null`` in JSON, an empty cell in CSV and ``–`` in Markdown.
JSON files are strict (no ``Infinity``): ``+inf`` / ``-inf`` are the strings ``"inf"`` /
``"-inf"`` (`msdnet_tf.common.json_value`).
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Iterable, Sequence

import numpy as np

from msdnet_tf.common import read_json, write_json
from msdnet_tf.evaluation.classes import PerClassAccuracy
from msdnet_tf.evaluation.difficulty import SampleDifficulty
from msdnet_tf.evaluation.metrics import exit_names

__all__ = [
    "per_class_markdown",
    "per_exit_markdown",
    "read_budgeted_json",
    "read_difficulty_csv",
    "write_budgeted_json",
    "write_difficulty_csv",
    "write_per_class_csv",
    "write_per_exit_csv",
    "write_per_exit_json",
]

_INF_STRINGS = {"inf": math.inf, "-inf": -math.inf}


def _pct(value, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` decimals; None as ``–``."""
    return "–" if value is None else f"{100.0 * value:.{digits}f}"


def per_exit_markdown(summary: Sequence[dict]) -> str:
    """Renders `per_exit_summary` records as a Markdown table (percentages, MFLOPs).

    Columns: exit, MFLOPs (only when the records carry costs), top-1, top-5, ensemble top-1.
    Undefined values (top-5 with fewer than 5 classes) are shown as ``–``.
    """
    with_cost = all("mflops" in r for r in summary)
    head = ["Exit"] + (["MFLOPs"] if with_cost else [])
    head += ["Top-1 (%)", "Top-5 (%)", "Ensemble top-1 (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in summary:
        cells = [r["name"]] + ([f"{r['mflops']:.2f}"] if with_cost else [])
        cells += [_pct(r.get("top1")), _pct(r.get("top5")), _pct(r.get("ensemble_top1"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_markdown(table: PerClassAccuracy, classes: Sequence[int] | None = None) -> str:
    """Markdown table of per-class accuracy (fractions, 3 decimals, as the blog's Table 1).

    Args:
        table: a `PerClassAccuracy`.
        classes: class indices to show (default: all).
    """
    rows = table.rows()
    if classes is not None:
        rows = [rows[int(c)] for c in classes]
    names = exit_names(table.correct.shape[1])
    lines = ["| Class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        cells = ["–" if row[n] is None else f"{row[n]:.3f}" for n in names]
        lines.append(f"| {row['class_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_cell(value) -> str:
    """One CSV cell: None empty, bools 1/0, floats at full precision (``repr``)."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _write_csv(path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row])


def write_per_exit_json(summary: Sequence[dict], path) -> None:
    """Writes `per_exit_summary` records as ``{"exits": [...]}`` (``None`` -> ``null``)."""
    write_json({"exits": list(summary)}, path)


def write_per_exit_csv(summary: Sequence[dict], path) -> None:
    """Writes `per_exit_summary` records as CSV, one row per exit; ``None`` is an empty cell."""
    columns = ["exit", "name", "cumulative_flops", "mflops", "top1", "top5", "ensemble_top1"]
    columns = [c for c in columns if any(c in r for r in summary)]
    _write_csv(path, columns, ([r.get(c) for c in columns] for r in summary))


def write_per_class_csv(table: PerClassAccuracy, path) -> None:
    """Writes the per-class table: ``class_id, class_name, support, B1..BK``; classes without
    samples have empty accuracy cells."""
    rows = table.rows()
    header = list(rows[0]) if rows else ["class_id", "class_name", "support"]
    _write_csv(path, header, ([row[h] for h in header] for row in rows))


def write_difficulty_csv(difficulty: SampleDifficulty, path, class_names=None) -> None:
    """Writes one row per sample: ``index, label, class_name, n_correct``, then for each exit
    ``pred_Bk`` (predicted class) and ``correct_Bk`` (1 or 0).

    Args:
        difficulty: a `SampleDifficulty`.
        path: the CSV file.
        class_names: names of all classes (indexed by class id), or None for the ids.
    """
    num_classes = int(max(difficulty.labels.max(), difficulty.predictions.max())) + 1
    if class_names is not None and len(class_names) < num_classes:
        raise ValueError(
            f"`class_names` must name every class that occurs (at least {num_classes}). "
            f"Received: {len(class_names)} names"
        )
    names = exit_names(difficulty.num_exits)
    header = ["index", "label", "class_name", "n_correct"]
    for name in names:
        header += [f"pred_{name}", f"correct_{name}"]
    correct, n_correct = difficulty.correct, difficulty.n_correct

    def rows():
        for i, label in enumerate(difficulty.labels):
            row = [i, label, str(label) if class_names is None else class_names[label]]
            row.append(n_correct[i])
            for k in range(difficulty.num_exits):
                row += [difficulty.predictions[i, k], correct[i, k]]
            yield row

    _write_csv(path, header, rows())


def read_difficulty_csv(path) -> tuple[SampleDifficulty, dict[int, str]]:
    """Reads a file written by `write_difficulty_csv`.

    Returns:
        ``(difficulty, names)``: the `SampleDifficulty` and ``{label: class_name}`` for the
        labels present in the file.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: a column of `write_difficulty_csv` is missing, or the index column does not
            count 0, 1, ...
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No difficulty CSV at {path}. Received: {path!r} (missing)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        pred_columns = [c for c in columns if c.startswith("pred_B")]
        missing = [c for c in ("index", "label", "class_name") if c not in columns]
        if missing or not pred_columns:
            raise ValueError(
                f"{path} is not a difficulty CSV (`write_difficulty_csv`): it needs the columns "
                f"index, label, class_name and pred_B1... Received: columns {columns}"
            )
        labels, preds, names = [], [], {}
        for i, row in enumerate(reader):
            if int(row["index"]) != i:
                raise ValueError(
                    f"{path}: the index column must count 0, 1, ... Received: {row['index']} "
                    f"on data row {i}"
                )
            label = int(row["label"])
            labels.append(label)
            names[label] = row["class_name"]
            preds.append([int(row[c]) for c in pred_columns])
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(preds, dtype=np.int64).reshape(len(labels), len(pred_columns))
    return SampleDifficulty(labels, predictions), names


def write_budgeted_json(records: Sequence[dict], path, cumulative_flops=None) -> None:
    """Writes sweep records as strict JSON ``{"cumulative_flops": [...] | null, "records": [...]}``.

    JSON has no infinity: thresholds ``+inf`` / ``-inf`` are written as the strings ``"inf"`` /
    ``"-inf"``. Finite floats are written with full precision (`read_budgeted_json` gives back
    the same float64 thresholds).
    """
    flops = None if cumulative_flops is None else np.asarray(cumulative_flops, np.float64)
    write_json({"cumulative_flops": flops, "records": list(records)}, path)


def read_budgeted_json(path) -> dict:
    """Reads `write_budgeted_json` output; thresholds come back as float64 arrays with +-inf.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not valid JSON.
    """
    data = read_json(path, "budgeted sweep JSON")
    for record in data["records"]:
        record["thresholds"] = np.asarray(
            [_INF_STRINGS.get(t, t) if isinstance(t, str) else t for t in record["thresholds"]],
            dtype=np.float64,
        )
    return data
