"""Tests of msdnet_tf.evaluation: hand-computed cases, oracles, file writers and error cases."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from msdnet_tf import evaluation as ev
from msdnet_tf.evaluation import plots

FLOPS3 = [10.0, 25.0, 45.0]


def _probs(conf, pred, num_classes=10):
    """(K, N, C) probabilities whose row (k, n) has max `conf[k][n]` at class `pred[k][n]`.

    The other classes share the rest equally, so every confidence above 1 / C is the maximum.
    """
    conf = np.asarray(conf, dtype=np.float64)
    pred = np.broadcast_to(np.asarray(pred), conf.shape)
    probs = np.repeat(((1.0 - conf) / (num_classes - 1))[..., None], num_classes, axis=-1)
    np.put_along_axis(probs, pred[..., None], conf[..., None], axis=-1)
    return probs


def _one_hot_scores(pred_nk, num_classes):
    """(K, N, C) scores whose argmax is `pred_nk[n, k]`."""
    pred = np.asarray(pred_nk).T
    return np.eye(num_classes)[pred]


def _random_probs(rng, shape):
    return ev.softmax(3.0 * rng.normal(size=shape))


# ------------------------------------------------------------------------------------------
# softmax, top-k, ensemble
# ------------------------------------------------------------------------------------------


def test_softmax_is_stable_and_exact_on_a_hand_case():
    out = ev.softmax(np.array([[1000.0, 1000.0 + math.log(3.0)], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-12)
    assert out.dtype == np.float64
    np.testing.assert_allclose(ev.softmax([[-1e4, 0.0]]), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="finite"):
        ev.softmax(np.array([0.0, np.nan]))


def test_per_exit_topk_hand_case_with_ties():
    exit1 = [
        [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # label 0: top-1 and top-5
        [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],  # label 5: tied with class 4, ranked 6th -> miss
        [0.3, 0.3, 0.1, 0.1, 0.1, 0.1],  # label 1: tied with class 0 -> 2nd, top-5 only
    ]
    exit2 = [
        [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    ]
    records = ev.per_exit_topk([np.array(exit1), np.array(exit2)], [0, 5, 1])
    assert records == [
        {"exit": 1, "name": "B1", "top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)},
        {"exit": 2, "name": "B2", "top1": 1.0, "top5": 1.0},
    ]
    # top-1 is exactly the argmax accuracy, ties included
    assert ev.per_exit_topk(np.array([exit1]), [0, 5, 1], ks=(1,))[0]["top1"] == pytest.approx(
        np.mean(np.argmax(exit1, axis=1) == [0, 5, 1])
    )


def test_per_exit_topk_with_fewer_classes_than_k():
    scores = np.array([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]])
    assert ev.per_exit_topk(scores, [2, 1]) == [
        {"exit": 1, "name": "B1", "top1": 0.5, "top5": None}
    ]
    five = np.eye(5)[None, [0, 1]]
    assert ev.per_exit_topk(five, [4, 3])[0]["top5"] == 1.0  # k == C: always in the top k


def test_topk_matches_a_stable_sort_oracle_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(3, 200, 7)).astype(np.float32)  # many exact ties
    labels = rng.integers(0, 7, size=200)
    for k in (1, 2, 5):
        expected = [
            np.mean([labels[n] in np.argsort(-s[n], kind="stable")[:k] for n in range(200)])
            for s in scores
        ]
        got = [r[f"top{k}"] for r in ev.per_exit_topk(scores, labels, ks=(k,))]
        np.testing.assert_allclose(got, expected)


def test_ensemble_accuracy_hand_case():
    probs = np.array(
        [
            [[0.9, 0.1], [0.4, 0.6]],  # exit 1: both right
            [[0.4, 0.6], [0.2, 0.8]],  # exit 2: first wrong
            [[0.1, 0.9], [0.9, 0.1]],  # exit 3: both wrong
        ]
    )
    labels = [0, 1]
    # means: exits 1-2 -> [.65, .35], [.3, .7] (both right);
    # exits 1-3 -> [.4667, .5333] (wrong), [.5, .5] -> class 0 on the tie (wrong)
    np.testing.assert_allclose(ev.ensemble_accuracy(probs, labels), [1.0, 1.0, 0.0])
    assert [r["top1"] for r in ev.per_exit_topk(probs, labels)] == [1.0, 0.5, 0.0]
    np.testing.assert_allclose(ev.ensemble_probs(probs)[1], [[0.65, 0.35], [0.3, 0.7]])


def test_anytime_curve_and_summary():
    probs = _probs([[0.9, 0.8], [0.7, 0.9]], [[0, 0], [1, 1]], num_classes=3)
    curve = ev.anytime_curve(probs, [0, 1], [2e6, 5e6])
    np.testing.assert_allclose(curve["flops"], [2e6, 5e6])
    np.testing.assert_allclose(curve["top1"], [0.5, 0.5])
    summary = ev.per_exit_summary(probs, [0, 1], [2e6, 5e6])
    assert summary[1]["mflops"] == 5.0 and summary[1]["top5"] is None
    markdown = ev.per_exit_markdown(summary)
    assert markdown.splitlines()[0] == (
        "| Exit | MFLOPs | Top-1 (%) | Top-5 (%) | Ensemble top-1 (%) |"
    )
    assert "| B2 | 5.00 | 50.00 | – |" in markdown
    assert "MFLOPs" not in ev.per_exit_markdown(ev.per_exit_summary(probs, [0, 1]))


# ------------------------------------------------------------------------------------------
# Per-class table and difficulty
# ------------------------------------------------------------------------------------------


def test_per_class_accuracy_hand_case_with_an_empty_class(tmp_path):
    # classes 0, 1 present, class 2 has no sample
    pred_nk = [[0, 0], [1, 0], [1, 1], [1, 1], [0, 1]]
    labels = [0, 0, 1, 1, 1]
    table = ev.per_class_accuracy(_one_hot_scores(pred_nk, 3), labels, ["cat", "dog", "truck"])
    np.testing.assert_array_equal(table.support, [2, 3, 0])
    np.testing.assert_array_equal(table.correct, [[1, 2], [2, 3], [0, 0]])
    accuracy = table.accuracy
    assert not np.isnan(accuracy.data).any()
    np.testing.assert_array_equal(accuracy.mask, [[False, False], [False, False], [True, True]])
    np.testing.assert_allclose(accuracy[:2], [[0.5, 1.0], [2 / 3, 1.0]])
    rows = table.rows()
    assert rows[2] == {"class_id": 2, "class_name": "truck", "support": 0, "B1": None, "B2": None}

    ev.write_per_class_csv(table, tmp_path / "per_class.csv")
    with open(tmp_path / "per_class.csv", newline="") as f:
        read = list(csv.reader(f))
    assert read[0] == ["class_id", "class_name", "support", "B1", "B2"]
    assert read[1] == ["0", "cat", "2", "0.5", "1.0"]
    assert read[3] == ["2", "truck", "0", "", ""]
    markdown = ev.per_class_markdown(table, classes=[1, 2])
    assert "| dog | 0.667 | 1.000 |" in markdown and "| truck | – | – |" in markdown


def test_per_class_heat_map_paints_each_cell_in_its_colour(tmp_path, monkeypatch):
    from matplotlib import colormaps
    from matplotlib.image import imread

    pred_nk = [[0, 0], [1, 0], [1, 1], [1, 1], [0, 1]]
    table = ev.per_class_accuracy(_one_hot_scores(pred_nk, 3), [0, 0, 1, 1, 1])
    drawn = []
    save = plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: drawn.append(fig) or save(fig, path)
    )
    path = tmp_path / "per_class.png"
    ev.plot_per_class(table, path)
    pixels = imread(path)[..., :3]  # floats in [0, 1], row 0 at the top
    ax = drawn[0].axes[0]
    expected = {
        (0, 0): colormaps["viridis"](0.5),  # class 0, exit B1: 1 of 2
        (0, 1): colormaps["viridis"](1.0),
        (1, 0): colormaps["viridis"](2 / 3),
        (1, 1): colormaps["viridis"](1.0),
        (2, 0): (1.0, 1.0, 1.0),  # class 2 has no sample: a blank cell
        (2, 1): (1.0, 1.0, 1.0),
    }
    for (c, k), colour in expected.items():
        # a point inside the cell, off its centre where the value is written
        x, y = ax.transData.transform((k - 0.3, c - 0.3))
        pixel = pixels[pixels.shape[0] - int(round(y)), int(round(x))]
        np.testing.assert_allclose(pixel, colour[:3], atol=2 / 255, err_msg=f"cell {(c, k)}")
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["100.0", "100.0", "50.0", "66.7"]


def _difficulty_case():
    pred_nk = [[0, 0, 0], [0, 2, 0], [2, 0, 2], [1, 0, 0], [1, 1, 1]]
    labels = [0, 1, 2, 1, 0]
    return ev.sample_difficulty(_one_hot_scores(pred_nk, 3), labels)


def test_sample_difficulty_counts_histogram_and_selection():
    d = _difficulty_case()
    np.testing.assert_array_equal(d.n_correct, [3, 0, 2, 1, 0])
    np.testing.assert_array_equal(d.histogram(), [2, 1, 1, 1])
    assert d.correct_exits(2) == (1, 3) and d.correct_exits(1) == ()
    np.testing.assert_array_equal(ev.select_by_difficulty(d, 10), [1, 4, 3, 2, 0])
    np.testing.assert_array_equal(ev.select_by_difficulty(d, 10, hardest=False), [0, 2, 3, 1, 4])
    np.testing.assert_array_equal(ev.select_by_difficulty(d, 2), [1, 4])
    np.testing.assert_array_equal(ev.select_by_difficulty(d, 5, class_id=0), [4, 0])
    np.testing.assert_array_equal(ev.select_by_difficulty(d, 5, False, class_id=1), [3, 1])
    assert ev.select_by_difficulty(d, 0).size == 0
    with pytest.raises(ValueError, match="Received: n=-1"):
        ev.select_by_difficulty(d, -1)


def test_difficulty_csv_round_trip(tmp_path):
    d = _difficulty_case()
    path = tmp_path / "difficulty.csv"
    ev.write_difficulty_csv(d, path, ["cat", "dog", "truck"])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "index", "label", "class_name", "n_correct",
        "pred_B1", "correct_B1", "pred_B2", "correct_B2", "pred_B3", "correct_B3",
    ]  # fmt: skip
    assert rows[3] == ["2", "2", "truck", "2", "2", "1", "0", "0", "2", "1"]
    back, names = ev.read_difficulty_csv(path)
    np.testing.assert_array_equal(back.labels, d.labels)
    np.testing.assert_array_equal(back.predictions, d.predictions)
    assert names == {0: "cat", 1: "dog", 2: "truck"}


def test_read_difficulty_csv_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No difficulty CSV at .*Received: .*missing"):
        ev.read_difficulty_csv(tmp_path / "absent.csv")
    other = tmp_path / "per_class.csv"
    other.write_text("class_id,class_name,support,B1\n0,cat,2,0.5\n")
    with pytest.raises(ValueError, match=r"not a difficulty CSV.*Received: columns \['class_id'"):
        ev.read_difficulty_csv(other)


# ------------------------------------------------------------------------------------------
# Budgeted batch classification: hand-computed thresholds (N = 10, K = 3, C = 10)
# ------------------------------------------------------------------------------------------

# Case A: distinct confidences. Samples 2 and 6 are the most confident at exit 2 but exit at 1.
CONF_A = [
    [0.90, 0.30, 0.80, 0.50, 0.70, 0.40, 0.95, 0.35, 0.60, 0.45],
    [0.50, 0.90, 0.99, 0.60, 0.85, 0.70, 0.99, 0.40, 0.80, 0.30],
    [0.50] * 10,
]
PRED_A = [
    [0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    [1, 0, 1, 1, 0, 1, 1, 1, 0, 1],
    [1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
]
LABELS_A = np.zeros(10, dtype=np.int64)


@pytest.mark.parametrize(
    "p, targets",
    [
        (20, [3, 3]),  # q = 1: P = 1/3 each, floor(10/3) = 3
        (10, [5, 2]),  # q = 1/2: P = 4/7, 2/7, 1/7 -> floor(5.71), floor(2.86)
        (2, [9, 0]),  # q = 1/10: P = 100/111, 10/111, 1/111 -> floor(9.009), floor(0.9009)
        (40, [1, 2]),  # q = 2: P = 1/7, 2/7, 4/7
        (60, [0, 2]),  # q = 3: P = 1/13, 3/13, 9/13 -> floor(0.77), floor(2.31)
    ],
)
def test_exit_targets_hand_values(p, targets):
    np.testing.assert_array_equal(ev.exit_targets(10, p, 3), targets)


def test_exit_proportions_hand_values():
    np.testing.assert_allclose(ev.exit_proportions(0.5, 3), [4 / 7, 2 / 7, 1 / 7], rtol=1e-15)
    np.testing.assert_allclose(ev.exit_proportions(1, 4), [0.25] * 4)
    # exact arithmetic: 5000 * 1/5 is 1000, not 999
    assert ev.exit_targets(5000, 20, 5).tolist() == [1000] * 4


@pytest.mark.parametrize(
    "p, thresholds, exit_index",
    [
        # n = (3, 3): exit-1 top three are 0.95, 0.90, 0.80 -> T1 = 0.80 (samples 6, 0, 2).
        # Remaining exit-2 confidences sorted: 0.90 (1), 0.85 (4), 0.80 (8), ... -> T2 = 0.80;
        # over all samples the third would be 0.90 (0.99, 0.99, 0.90): only the remaining count.
        (20, [0.80, 0.80, -math.inf], [0, 1, 0, 2, 1, 2, 0, 2, 1, 2]),
        # n = (5, 2): T1 = 5th largest = 0.60; remaining {1, 3, 5, 7, 9} at exit 2:
        # 0.90, 0.70, 0.60, 0.40, 0.30 -> T2 = 0.70
        (10, [0.60, 0.70, -math.inf], [0, 1, 0, 2, 0, 1, 0, 2, 0, 2]),
        # n = (9, 0): T1 = 9th largest = 0.35, exit 2 takes nobody, exit 3 takes sample 1
        (2, [0.35, math.inf, -math.inf], [0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
        # n = (0, 2): exit 1 takes nobody; exit 2: 0.99 (2), 0.99 (6) -> T2 = 0.99
        (60, [math.inf, 0.99, -math.inf], [2, 2, 1, 2, 2, 2, 1, 2, 2, 2]),
    ],
)
def test_budgeted_thresholds_hand_case(p, thresholds, exit_index):
    probs = _probs(CONF_A, PRED_A)
    got = ev.budgeted_thresholds(probs, p)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, thresholds)
    np.testing.assert_array_equal(ev.exit_indices(probs, got), exit_index)


def test_budgeted_thresholds_ties_let_more_samples_exit():
    conf = [
        [0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.6, 0.7, 0.2],
        [0.99, 0.99, 0.99, 0.99, 0.6, 0.6, 0.6, 0.6, 0.2, 0.3],
        [0.5] * 10,
    ]
    probs = _probs(conf, 0)
    # n = (3, 3). Exit 1: 0.9, 0.8, 0.8, 0.8 -> the 3rd is 0.8, all four >= 0.8 exit.
    # Remaining {4..9} at exit 2: 0.6 x4, 0.3, 0.2 -> T2 = 0.6, four exit; exit 3 takes 2.
    thresholds = ev.budgeted_thresholds(probs, 20)
    np.testing.assert_array_equal(thresholds, [0.8, 0.6, -math.inf])
    result = ev.budgeted_evaluate(probs, np.zeros(10, np.int64), thresholds, FLOPS3)
    np.testing.assert_array_equal(result.exit_counts, [4, 4, 2])


def test_budgeted_thresholds_when_ties_exhaust_the_samples():
    # All ten tie at exit 1: T1 = 0.7 and everybody exits; exit 2 wants 3 of 0 left -> +inf.
    probs = _probs([[0.7] * 10, [0.9] * 10, [0.5] * 10], 0)
    thresholds = ev.budgeted_thresholds(probs, 20)
    np.testing.assert_array_equal(thresholds, [0.7, math.inf, -math.inf])
    result = ev.budgeted_evaluate(probs, np.zeros(10, np.int64), thresholds, FLOPS3)
    np.testing.assert_array_equal(result.exit_counts, [10, 0, 0])
    assert result.expected_flops == FLOPS3[0]
    # Eight tie: 8 exit at 1, exit 2 wants 3 of the 2 left -> +inf, exit 3 takes both.
    probs = _probs([[0.7] * 8 + [0.2, 0.3], [0.9] * 10, [0.5] * 10], 0)
    np.testing.assert_array_equal(ev.budgeted_thresholds(probs, 20), [0.7, math.inf, -math.inf])


def test_budgeted_evaluate_hand_case():
    probs = _probs(CONF_A, PRED_A)
    result = ev.budgeted_evaluate(probs, LABELS_A, [0.80, 0.80, -math.inf], FLOPS3)
    # exit 1: {0, 2, 6}, right on 0 and 2; exit 2: {1, 4, 8}, all right; exit 3: {3, 5, 7, 9},
    # right on 3 only -> 6 / 10. FLOPs: (3 * 10 + 3 * 25 + 4 * 45) / 10 = 28.5.
    assert result.accuracy == pytest.approx(0.6)
    assert result.expected_flops == pytest.approx(28.5)
    np.testing.assert_array_equal(result.exit_counts, [3, 3, 4])
    np.testing.assert_array_equal(result.exit_correct, [2, 3, 1])
    np.testing.assert_array_equal(result.exit_index, [0, 1, 0, 2, 1, 2, 0, 2, 1, 2])
    np.testing.assert_array_equal(result.predictions, [0, 0, 0, 0, 0, 1, 1, 1, 0, 1])


def test_exit_indices_rule():
    probs = _probs([[0.8, 0.79, 0.5, 0.9], [0.5, 0.7, 0.69, 0.1], [0.2, 0.2, 0.2, 0.2]], 0)
    # >= at exit 1 (0.8 exits), >= at exit 2 (0.7 exits), everything else goes to the last exit
    np.testing.assert_array_equal(ev.exit_indices(probs, [0.8, 0.7, -math.inf]), [0, 1, 2, 0])
    # the last exit accepts whatever its threshold
    np.testing.assert_array_equal(ev.exit_indices(probs, [math.inf] * 3), [2, 2, 2, 2])


def test_expected_flops_identity_all_at_first_exit():
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, (3, 50, 5))
    labels = rng.integers(0, 5, size=50)
    result = ev.budgeted_evaluate(probs, labels, [-math.inf] * 3, FLOPS3)
    assert result.expected_flops == FLOPS3[0]
    assert result.accuracy == ev.per_exit_topk(probs, labels, ks=(1,))[0]["top1"]


def test_validation_exits_equal_the_targets_without_ties():
    rng = np.random.default_rng(2)
    probs = _random_probs(rng, (4, 500, 10))  # continuous confidences: no ties
    labels = rng.integers(0, 10, size=500)
    flops = [1.0, 2.0, 3.0, 4.0]
    records = ev.budgeted_sweep(probs, probs, labels, flops, ps=range(1, 40))
    for record in records:
        targets = ev.exit_targets(500, record["p"], 4)
        assert record["exit_counts"][:3] == targets.tolist()
        assert sum(record["exit_counts"]) == 500
        np.testing.assert_allclose(record["proportions"], ev.exit_proportions(record["q"], 4))
    assert records[0]["expected_flops"] < records[-1]["expected_flops"]
    direct = ev.budgeted_thresholds(probs, 20)
    np.testing.assert_array_equal(records[19]["thresholds"], direct)
    assert records[19]["p"] == 20 and records[19]["q"] == 1.0


def test_sweep_expected_flops_non_decreasing_with_two_exits():
    # With K = 2, n_1 = floor(N / (1 + q)) falls as q grows, so T_1 rises and, on any test set,
    # fewer samples leave at exit 1: the expected cost cannot decrease.
    rng = np.random.default_rng(3)
    val = _random_probs(rng, (2, 300, 10))
    test = _random_probs(rng, (2, 200, 10))
    labels = rng.integers(0, 10, size=200)
    records = ev.budgeted_sweep(val, test, labels, [5.0, 9.0])
    flops = [r["expected_flops"] for r in records]
    assert all(a <= b for a, b in zip(flops, flops[1:]))
    assert 5.0 <= flops[0] and flops[-1] <= 9.0 and flops[0] < flops[-1]


def test_budgeted_json_is_strict_and_round_trips(tmp_path):
    probs = _probs(CONF_A, PRED_A)
    records = ev.budgeted_sweep(probs, probs, LABELS_A, FLOPS3, ps=[2, 20, 60])
    path = tmp_path / "budgeted.json"
    ev.write_budgeted_json(records, path, FLOPS3)

    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    data = json.loads(path.read_text(), parse_constant=reject)
    assert data["records"][0]["thresholds"] == [0.35, "inf", "-inf"]
    back = ev.read_budgeted_json(path)
    for record, original in zip(back["records"], records):
        np.testing.assert_array_equal(record["thresholds"], original["thresholds"])
        assert record["exit_counts"] == original["exit_counts"]
    assert back["cumulative_flops"] == FLOPS3


# ------------------------------------------------------------------------------------------
# Report and plots
# ------------------------------------------------------------------------------------------


def test_write_report_writes_every_file(tmp_path):
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, (3, 60, 6))
    val = _random_probs(rng, (3, 40, 6))
    labels = rng.integers(0, 5, size=60)  # class 5 has no sample
    names = ["plane", "car", "bird", "cat", "deer", "truck"]
    summary = ev.write_report(tmp_path / "run", probs, labels, names, [1e6, 2e6, 3e6], val)
    expected = {
        "per_exit.json", "per_exit.csv", "per_class.csv", "per_class.png", "difficulty.csv",
        "difficulty_hist.png", "anytime.png", "budgeted.json", "budgeted.png",
    }  # fmt: skip
    assert set(summary["files"]) == expected == set(os.listdir(tmp_path / "run"))
    for name in expected:
        size = (tmp_path / "run" / name).stat().st_size
        assert 0 < size < 300_000, (name, size)
    per_exit = json.loads((tmp_path / "run" / "per_exit.json").read_text())
    assert [e["name"] for e in per_exit["exits"]] == ["B1", "B2", "B3"]
    assert per_exit["exits"][2]["cumulative_flops"] == 3e6
    with open(tmp_path / "run" / "per_exit.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["top1"]) == pytest.approx(summary["per_exit"][0]["top1"])
    with open(tmp_path / "run" / "per_class.csv", newline="") as f:
        truck = list(csv.DictReader(f))[5]
    assert truck["class_name"] == "truck" and truck["support"] == "0" and truck["B1"] == ""
    with open(tmp_path / "run" / "difficulty.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 60
    assert sum(summary["difficulty_histogram"]) == 60
    assert len(summary["budgeted"]) == 39
    json.loads((tmp_path / "run" / "budgeted.json").read_text())


def test_write_report_without_validation(tmp_path):
    rng = np.random.default_rng(5)
    probs = [p for p in _random_probs(rng, (2, 20, 3))]
    summary = ev.write_report(tmp_path, probs, rng.integers(0, 3, 20), None, [1.0, 2.0])
    assert "budgeted.json" not in summary["files"] and summary["budgeted"] is None
    assert summary["per_exit"][0]["top5"] is None


def test_heat_map_with_many_classes_stays_small(tmp_path):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 100, size=400)
    table = ev.per_class_accuracy(rng.normal(size=(7, 400, 100)), labels)
    ev.plot_per_class(table, tmp_path / "c100.png")
    assert (tmp_path / "c100.png").stat().st_size < 300_000


# ------------------------------------------------------------------------------------------
# Error cases
# ------------------------------------------------------------------------------------------

_P = _probs(CONF_A, PRED_A)
_NAN = _P.copy()
_NAN[1, 3, 2] = np.nan
_INF = _P.copy()
_INF[0, 0, 0] = np.inf


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: ev.per_exit_topk(_P[0], LABELS_A),
            r"shape \(K, N, C\).*Received: shape \(10, 10\)",
        ),
        (lambda: ev.per_exit_topk([_P[0], _P[1, :5]], LABELS_A), r"same shape"),
        (lambda: ev.per_exit_topk([], LABELS_A), r"at least one exit"),
        (lambda: ev.per_exit_topk(_P[:, :0], []), r"at least one exit, one sample"),
        (lambda: ev.per_exit_topk(_P, LABELS_A[:9]), r"one entry per sample \(10\)"),
        (lambda: ev.per_exit_topk(_P, np.eye(10)), r"not one-hot"),
        (lambda: ev.per_exit_topk(_P, LABELS_A + 0.0), r"must be integers"),
        (
            lambda: ev.per_exit_topk(_P, [0, 1, 12, -1, 12, 0, 0, 0, 0, 0]),
            r"\[0, 10\).*3 label\(s\).*Received: out-of-range values -1, 12$",
        ),
        (lambda: ev.sample_difficulty(_NAN, LABELS_A), r"NaN or infinite.*exit 2, sample 3"),
        (lambda: ev.per_class_accuracy(_INF, LABELS_A), r"finite.*Received: inf"),
        (lambda: ev.per_exit_topk(_P.astype(complex), LABELS_A), r"real numbers"),
        (lambda: ev.per_exit_topk(_P, LABELS_A, ks=(0, 1)), r"positive"),
        (lambda: ev.ensemble_accuracy(_P * 2.0, LABELS_A), r"rows sum to 1"),
        (lambda: ev.ensemble_accuracy(_P - 0.5, LABELS_A), r"negative"),
        (lambda: ev.budgeted_thresholds(np.log(_P), 20), r"probabilities"),
        (lambda: ev.anytime_curve(_P, LABELS_A, [1.0, 2.0]), r"one number per exit \(3\)"),
        (lambda: ev.budgeted_evaluate(_P, LABELS_A, [0.5] * 3, [1.0] * 4), r"one number per exit"),
        (lambda: ev.budgeted_evaluate(_P, LABELS_A, [0.5] * 3, [3.0, 2.0, 1.0]), r"decreasing"),
        (lambda: ev.budgeted_evaluate(_P, LABELS_A, [0.5] * 2, FLOPS3), r"`thresholds` must be 3"),
        (lambda: ev.exit_indices(_P, [0.5, np.nan, 0.1]), r"no NaN"),
        (lambda: ev.budgeted_thresholds(_P, 0), r"Received: p=0"),
        (lambda: ev.budgeted_thresholds(_P, math.nan), r"positive finite"),
        (lambda: ev.budgeted_sweep(_P, _P[:2], LABELS_A, FLOPS3[:2]), r"same number of exits"),
        (lambda: ev.per_class_accuracy(_P, LABELS_A, ["a", "b"]), r"one entry per class \(10\)"),
        (lambda: ev.write_report("/nonexistent/x", _P, LABELS_A, None, [1.0]), r"per exit"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "Received:" in str(info.value)


def test_float32_thresholds_are_exact_float32_confidences():
    # The early-exit engine compares float32 confidences with float32-cast thresholds: this must
    # give the same exits as the float64 rule here.
    rng = np.random.default_rng(7)
    probs = _random_probs(rng, (4, 300, 10)).astype(np.float32)
    probs /= probs.sum(axis=-1, keepdims=True)
    for p in (3, 20, 37):
        thresholds = ev.budgeted_thresholds(list(probs), p)
        finite = thresholds[np.isfinite(thresholds)]
        np.testing.assert_array_equal(finite.astype(np.float32).astype(np.float64), finite)
        conf32 = probs.max(axis=-1)
        passes = conf32 >= thresholds.astype(np.float32)[:, None]
        passes[-1] = True
        np.testing.assert_array_equal(np.argmax(passes, axis=0), ev.exit_indices(probs, thresholds))
    np.testing.assert_array_equal(
        ev.budgeted_thresholds(probs, 20.0), ev.budgeted_thresholds(probs, np.int64(20))
    )


# ------------------------------------------------------------------------------------------
# The package: NumPy-only, and its public names
# ------------------------------------------------------------------------------------------


def test_import_loads_neither_tensorflow_nor_matplotlib():
    code = (
        "import sys, msdnet_tf.evaluation\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'matplotlib'})\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_public_name_is_defined_once_in_a_submodule():
    import importlib

    homes = {}
    for name in ("inputs", "metrics", "classes", "difficulty", "budgeted", "tables", "plots",
                 "report"):  # fmt: skip
        module = importlib.import_module(f"msdnet_tf.evaluation.{name}")
        for public in module.__all__:
            assert public not in homes, (public, homes.get(public), name)
            homes[public] = name
    for public in ev.__all__:
        assert public in homes and getattr(ev, public) is not None, public


# ------------------------------------------------------------------------------------------
# msdnet_tf.evaluation.predict (the TensorFlow side)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -8, 2.5, True])
def test_evaluate_run_rejects_a_bad_batch_size_before_any_work(tmp_path, batch_size):
    from msdnet_tf.evaluation.predict import evaluate_run

    with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1\. Received"):
        evaluate_run(None, None, str(tmp_path / "run"), batch_size=batch_size)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_evaluate_run_writes_strict_json_results(tmp_path, testing_model):
    from msdnet_tf.data import load_dataset
    from msdnet_tf.evaluation.predict import evaluate_run

    splits = load_dataset("digits", batch_size=128, image_size=16)
    summary = evaluate_run(testing_model, splits, str(tmp_path), batch_size=100)

    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    results = json.loads((tmp_path / "results.json").read_text(), parse_constant=reject)
    assert results["split_sizes"] == splits.sizes
    assert [r["thresholds"][-1] for r in results["budgeted"]] == ["-inf"] * 39
    assert results["per_exit"] == json.loads((tmp_path / "per_exit.json").read_text())["exits"]
    assert results["files"] == summary["files"]
    with np.load(tmp_path / "probabilities.npz") as arrays:
        assert arrays["test_probs"].shape == (3, splits.sizes["test"], 10)
