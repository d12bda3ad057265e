"""`msdnet_tf.serving.lite`: the TFLite export run by parallel interpreters on sub-batches, and the
TFLite early exit against the simulated budgeted evaluation."""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.common import check_image_batch
from msdnet_tf.serving import lite
from msdnet_tf.serving.engine import EarlyExitClassifier
from msdnet_tf.serving.export import (
    tflite_probabilities,
    to_tflite,
    to_tflite_segments,
    to_tflite_single_image,
)
from msdnet_tf.serving.lite import LiteClassifier, LiteEarlyExit, interpreter
from msdnet_tf.serving.lite_schedule import Schedule, even_slices, row_runs
from msdnet_tf.serving.stages import exit_segments


@pytest.fixture(scope="module")
def content(testing_model):
    return to_tflite(testing_model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).normal(size=(37, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("workers, sub_batch", [(1, 64), (2, 8), (3, 5), (2, 1)])
def test_equals_one_interpreter_and_keras(testing_model, content, images, workers, sub_batch):
    classifier = LiteClassifier(content, workers=workers, sub_batch=sub_batch)
    probs = classifier(images)
    whole = tflite_probabilities(content, images)
    keras_probs = np.stack([tf.nn.softmax(o).numpy() for o in testing_model(images)])
    assert probs.shape == (3, 37, 10) and probs.dtype == np.float32
    # Every image is computed alone (per-image ops only): sub-batching changes nothing but
    # XNNPACK's blocking, i.e. float32 round-off.
    np.testing.assert_allclose(probs, whole, atol=2e-6)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-5)
    np.testing.assert_array_equal(classifier.predict(images), probs.argmax(-1))


def test_order_is_kept_when_images_differ_in_every_chunk(content, images):
    """Each image's output must land at its own row, whatever worker ran its chunk."""
    classifier = LiteClassifier(content, workers=3, sub_batch=4)
    probs = classifier(images)
    for i in (0, 5, 17, 36):
        alone = classifier(images[i : i + 1])
        np.testing.assert_allclose(probs[:, i], alone[:, 0], atol=2e-6)
    assert classifier(images[:0]).shape == (3, 0, 10)


def test_reads_a_file_and_reports_attributes(content, tmp_path, images):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    classifier = LiteClassifier(str(path), workers=2)
    assert (classifier.num_exits, classifier.image_shape, classifier.num_classes) == (
        3, (16, 16, 3), 10,
    )  # fmt: skip
    np.testing.assert_allclose(classifier(images[:3]), LiteClassifier(content)(images[:3]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 0}, r"`workers` must be an integer >= 1. Received: workers=0"),
        ({"sub_batch": 2.5}, r"`sub_batch` must be an integer >= 1. Received: sub_batch=2.5"),
        ({"workers": True}, r"`workers` must be an integer >= 1. Received: workers=True"),
    ],
)
def test_bad_settings_are_rejected(content, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LiteClassifier(content, **kwargs)


_FLOAT_INPUTS = (
    "`images` must be floating point model inputs (normalised as the model expects; convert raw "
    "pixels first). Received: dtype "
)
_FINITE = "`images` must be finite. Received: NaN or infinite values"


def _with(value, index, dtype="float32", shape=(3, 16, 16, 3)):
    images = np.random.default_rng(5).normal(size=shape).astype(dtype)
    images[index] = value
    return images


# (images, the exact message): every engine rejects them before running anything.
BAD_IMAGES = {
    "uint8 batch": (np.zeros((3, 16, 16, 3), np.uint8), _FLOAT_INPUTS + "uint8"),
    "uint8 image": (np.full((1, 16, 16, 3), 255, np.uint8), _FLOAT_INPUTS + "uint8"),
    "int64 batch": (np.ones((2, 16, 16, 3), np.int64), _FLOAT_INPUTS + "int64"),
    "strings": (np.full((1, 16, 16, 3), "a"), _FLOAT_INPUTS + "<U1"),
    "NaN pixel": (_with(np.nan, (2, 5, 7, 1)), _FINITE),
    "NaN image": (np.full((1, 16, 16, 3), np.nan, np.float32), _FINITE),
    "inf pixel": (_with(np.inf, (0, 0, 0, 0), "float64"), _FINITE),
    "wrong shape": (
        np.zeros((2, 8, 8, 3), np.float32),
        "`images` must have shape (N, 16, 16, 3). Received: shape (2, 8, 8, 3)",
    ),
    "wrong channels": (
        np.zeros((2, 16, 16, 1), np.float32),
        "`images` must have shape (N, 16, 16, 3). Received: shape (2, 16, 16, 1)",
    ),
    "3-D image": (
        np.zeros((16, 16, 3), np.float32),
        "`images` must be a batch of shape (N, 16, 16, 3). For one image, pass `images[None]`. "
        "Received: shape (16, 16, 3)",
    ),
}


@pytest.fixture(scope="module")
def engines(testing_model, content, segments):
    return {
        "EarlyExitClassifier": EarlyExitClassifier(testing_model, [0.5, 0.5], count_blocks=True),
        "LiteClassifier": LiteClassifier(content, workers=2, sub_batch=1),
        "LiteEarlyExit": LiteEarlyExit(segments, [0.5, 0.5], workers=2, sub_batch=1),
    }


def _work_done(engine):
    """What an engine has run so far (None when it does not count)."""
    if isinstance(engine, EarlyExitClassifier):
        return engine.block_runs.numpy().tolist()
    if isinstance(engine, LiteEarlyExit):
        return engine.segment_images.tolist()
    return None


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("name", ["EarlyExitClassifier", "LiteClassifier", "LiteEarlyExit"])
def test_every_engine_rejects_bad_images(engines, name, case):
    """Raw pixels, NaN / inf and wrong shapes are one clear error, before any block runs."""
    engine = engines[name]
    images, message = BAD_IMAGES[case]
    before = _work_done(engine)
    with pytest.raises(ValueError) as error:
        engine(images)
    assert str(error.value) == message
    assert _work_done(engine) == before


@pytest.mark.parametrize("name", ["EarlyExitClassifier", "LiteClassifier", "LiteEarlyExit"])
def test_every_engine_takes_float64_and_empty_batches(engines, name, images):
    engine = engines[name]
    as_float32 = engine(images[:5])
    as_float64 = engine(images[:5].astype("float64"))
    if isinstance(as_float32, dict):
        for key in as_float32:
            np.testing.assert_array_equal(as_float64[key], as_float32[key])
        assert all(len(v) == 0 for v in engine(images[:0]).values())
    else:
        np.testing.assert_array_equal(as_float64, as_float32)
        assert engine(images[:0]).shape == (3, 0, 10)


def test_images_are_checked_once_per_call(segments, content, many_images, monkeypatch):
    """The check costs one pass over the batch per call, not one per sub-batch or worker."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return check_image_batch(*args, **kwargs)

    monkeypatch.setattr(lite, "check_image_batch", counted)
    LiteEarlyExit(segments, [0.5, 0.5], workers=2, sub_batch=4)(many_images[:40])
    LiteClassifier(content, workers=2, sub_batch=4)(many_images[:40])
    assert calls == [(40, 16, 16, 3)] * 2


def test_tflite_probabilities_rejects_raw_pixels_and_nan(content):
    with pytest.raises(ValueError, match=r"floating point model inputs.*Received: dtype uint8"):
        tflite_probabilities(content, np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"must be finite. Received: NaN or infinite values"):
        tflite_probabilities(content, _with(np.nan, (1, 1, 1, 1)))


def test_missing_or_corrupt_files_are_reported(tmp_path, content):
    with pytest.raises(FileNotFoundError, match=r"No TFLite file at .*absent.tflite"):
        LiteClassifier(str(tmp_path / "absent.tflite"))
    with pytest.raises(ValueError, match=r"`content` is not a TFLite model \(9 bytes"):
        LiteClassifier(b"not a fb!")
    with pytest.raises(
        ValueError, match=r"`num_threads` must be an integer >= 1. Received: num_thr"
    ):
        interpreter(content, num_threads=0)


def test_a_flatbuffer_of_another_model_is_rejected(tmp_path):
    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 2 * x}

    module = Double()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    with pytest.raises(ValueError, match=r"Received: inputs \['x'\], outputs \['y'\]"):
        LiteClassifier(converter.convert())


# --- LiteEarlyExit -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def segments(testing_model):
    return to_tflite_segments(testing_model)


@pytest.fixture(scope="module")
def many_images():
    return np.random.default_rng(4).normal(size=(150, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def lite_probs(content, many_images):
    return LiteClassifier(content)(many_images)


def _simulated(probs, thresholds):
    exits = evaluation.exit_indices(probs, np.asarray(thresholds, np.float64))
    rows = probs[exits, np.arange(probs.shape[1])]
    return exits, rows.argmax(-1), rows.max(-1)


@pytest.mark.parametrize(
    "split_blocks, workers, sub_batch", [(None, 2, 16), (None, 1, 7), ((), 3, 1), ((1,), 2, 5)]
)
def test_early_exit_equals_the_simulated_evaluation(
    testing_model, segments, many_images, lite_probs, split_blocks, workers, sub_batch
):
    contents = segments if split_blocks is None else to_tflite_segments(testing_model, split_blocks)
    for p in (4, 20, 36):  # budget levels: most leave early ... most go far
        thresholds = evaluation.budgeted_thresholds(lite_probs, p)
        engine = LiteEarlyExit(contents, thresholds, workers=workers, sub_batch=sub_batch)
        out = engine(many_images)
        exits, classes, confidence = _simulated(lite_probs, thresholds)
        np.testing.assert_array_equal(out["exit_index"], exits)
        np.testing.assert_array_equal(out["class_id"], classes)
        np.testing.assert_array_equal(out["probability"], confidence)
        assert len(set(exits.tolist())) > 1  # the check has exits to tell apart
        # Segment k ran on exactly the images that had not left before exit k.
        reached = [(exits >= k).sum() for k in range(3)]
        np.testing.assert_array_equal(engine.segment_images, reached)


@pytest.mark.parametrize("n, count", [(64, 4), (150, 10), (10, 3), (7, 2), (2, 2), (17, 1)])
def test_batches_are_cut_into_contiguous_near_equal_slices(n, count):
    slices = even_slices(n, count)
    sizes = [s.stop - s.start for s in slices]
    assert len(slices) == count and slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices[:-1], slices[1:]))
    assert max(sizes) - min(sizes) <= 1


def test_stayer_rows_are_copied_as_runs_of_consecutive_rows():
    assert row_runs(np.array([0, 1, 2, 5, 6, 9])) == [(0, 3), (5, 7), (9, 10)]
    assert row_runs(np.array([3])) == [(3, 4)]
    assert row_runs(np.arange(16)) == [(0, 16)]
    assert row_runs(np.array([0, 2, 4])) == [(0, 1), (2, 3), (4, 5)]


def _wait_until(condition, seconds: float = 30) -> bool:
    """Polls `condition` every millisecond; False if it is still false after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_schedule_hands_sub_batches_out_then_stayers_to_a_waiting_worker():
    schedule = Schedule([slice(0, 4), slice(4, 8)], workers=2)
    assert schedule.take(0) == slice(0, 4) and schedule.take(0) == slice(4, 8)
    assert schedule.helper() is None  # worker 1 has not asked yet: nobody waits
    taken = []

    def worker_1():
        while (task := schedule.take(1)) is not None:
            taken.append(task)

    thread = threading.Thread(target=worker_1)
    thread.start()
    assert _wait_until(lambda: schedule.waiting == [1])
    assert schedule.helper() == 1 and schedule.helper() is None  # reserved once
    schedule.hand_over(1, (2, np.array([5, 7])))
    # worker 1 takes the stayers, then waits again
    assert _wait_until(lambda: not schedule.inbox and schedule.waiting == [1])
    assert schedule.take(0) is None  # worker 0 has nothing left: everyone waits, all done
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(taken) == 1 and taken[0][0] == 2 and taken[0][1].tolist() == [5, 7]
    assert schedule.handed_over == 1


def test_stayers_handed_to_an_idle_worker_keep_the_decisions(
    segments, many_images, lite_probs, monkeypatch
):
    """The first sub-batch leaves at exit 1, the second goes to the end: its worker hands half
    of its stayers to the first worker, waiting since segment 1, before segment 3. Decisions,
    classes and confidences are unchanged. Segment 2 waits until a worker is idle, so that the
    hand-over happens however the threads are scheduled (a loaded machine can delay the
    first worker's return to the schedule past the second worker's segments)."""
    order = np.argsort(-lite_probs[0].max(-1), kind="stable")
    picked = np.concatenate([order[:16], order[-16:]])  # 16 confident at exit 1, 16 not
    probs, images = lite_probs[:, picked], many_images[picked]
    thresholds = [probs[0, :16].max(-1).min(), np.inf, -np.inf]
    engine = LiteEarlyExit(segments, thresholds, workers=2, sub_batch=16)
    schedules = []

    class RecordedSchedule(lite.Schedule):
        def __init__(self, *args):
            super().__init__(*args)
            schedules.append(self)

    monkeypatch.setattr(lite, "Schedule", RecordedSchedule)
    for chain in engine._runners:

        def run_when_a_worker_waits(run=chain[1].run):
            _wait_until(lambda: schedules[-1].waiting)
            return run()

        chain[1].run = run_when_a_worker_waits
    exits, classes, confidence = _simulated(probs, thresholds)
    assert (exits[:16] == 0).all() and (exits[16:] == 2).all()
    for _ in range(3):
        out = engine(images)
        np.testing.assert_array_equal(out["exit_index"], exits)
        np.testing.assert_array_equal(out["class_id"], classes)
        np.testing.assert_array_equal(out["probability"], confidence)
    assert engine.handed_over >= 1
    np.testing.assert_array_equal(engine.segment_images, [3 * 32, 3 * 16, 3 * 16])


def test_small_batches_use_every_worker(segments, many_images, lite_probs):
    thresholds = evaluation.budgeted_thresholds(lite_probs, 20)
    engine = LiteEarlyExit(segments, thresholds, workers=2, sub_batch=64)
    exits, classes, _ = _simulated(lite_probs, thresholds)
    for i in range(0, 150, 15):
        for size in (2, 3, 15):
            out = engine(many_images[i : i + size])
            np.testing.assert_array_equal(out["exit_index"], exits[i : i + size])
            np.testing.assert_array_equal(out["class_id"], classes[i : i + size])


def test_default_sub_batch_follows_the_size_of_the_maps(segments):
    engine = LiteEarlyExit(segments)
    per_image = max(sum(4 * int(np.prod(s)) for s in seg.shapes) for seg in engine._runners[0][1:])
    assert engine.sub_batch == min(32, max(4, 6 * 2**20 // per_image))
    assert LiteEarlyExit(segments, sub_batch=5).sub_batch == 5


def test_default_segments_split_every_block_at_its_exit(testing_model, segments):
    """Segment k+1 reads what `exit_segments(model, None)` hands it: the maps of block k's
    part after exit k are computed only for the images that stay."""
    engine = LiteEarlyExit(segments)
    expected = [
        [list(t.shape[1:]) for t in segment.inputs]
        for segment in exit_segments(testing_model, None)
    ]
    assert [segment.shapes for segment in engine._runners[0]] == expected
    block_1_only = [list(t.shape[1:]) for t in exit_segments(testing_model, (1,))[2].inputs]
    assert expected[2] != block_1_only  # the test model's blocks differ in the two cuts


def test_an_error_in_one_worker_is_raised_and_frees_the_others(segments, many_images, lite_probs):
    engine = LiteEarlyExit(segments, [np.inf, np.inf], workers=2, sub_batch=8)
    broken = engine._runners[1][1]

    def fail():
        raise RuntimeError("segment 2 failed")

    broken.run = fail
    outcome = []

    def call():
        try:
            engine(many_images)
        except RuntimeError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the engine hung after a worker's error"
    assert outcome == ["segment 2 failed"]
    del broken.run  # the engine works again
    assert (engine(many_images)["exit_index"] == 2).all()


def test_segments_chain_to_the_full_model(testing_model, segments, many_images):
    """Everyone goes through: every segment's exit equals the full TFLite model's."""
    engine = LiteEarlyExit(segments, [np.inf, np.inf], workers=2)
    out = engine(many_images)
    full = tflite_probabilities(to_tflite(testing_model), many_images)
    np.testing.assert_array_equal(out["exit_index"], np.full(150, 2))
    np.testing.assert_allclose(out["probability"], full[2].max(-1), atol=2e-6)
    np.testing.assert_array_equal(engine.segment_images, [150, 150, 150])
    everyone_leaves = LiteEarlyExit(segments, [-np.inf, -np.inf], workers=2)
    assert (everyone_leaves(many_images)["exit_index"] == 0).all()
    np.testing.assert_array_equal(everyone_leaves.segment_images, [150, 0, 0])


def test_early_exit_single_images_and_empty_batches(segments, many_images, lite_probs):
    thresholds = evaluation.budgeted_thresholds(lite_probs, 12)
    engine = LiteEarlyExit(segments, thresholds, sub_batch=1)
    exits, classes, _ = _simulated(lite_probs, thresholds)
    for i in range(0, 150, 15):
        out = engine(many_images[i : i + 1])
        assert (out["exit_index"][0], out["class_id"][0]) == (exits[i], classes[i])
    empty = engine(many_images[:0])
    assert {k: (v.shape, v.dtype) for k, v in empty.items()} == {
        "class_id": ((0,), np.int64), "probability": ((0,), np.float32),
        "exit_index": ((0,), np.int64),
    }  # fmt: skip


def test_thresholds_given_per_call_are_checked_again_when_they_change(
    segments, many_images, lite_probs
):
    """The engine remembers the last thresholds it checked: a changed value, even in the same
    array changed in place, must be used (and a NaN rejected), not the remembered one."""
    engine = LiteEarlyExit(segments, workers=2)
    thresholds = np.array(evaluation.budgeted_thresholds(lite_probs, 4), np.float64)
    for p in (4, 36, 4):
        thresholds[:] = evaluation.budgeted_thresholds(lite_probs, p)
        out = engine(many_images, thresholds)
        np.testing.assert_array_equal(out["exit_index"], _simulated(lite_probs, thresholds)[0])
    thresholds[0] = np.nan
    with pytest.raises(ValueError, match=r"must not contain NaN"):
        engine(many_images, thresholds)
    with pytest.raises(ValueError, match=r"1-D array of 3 values"):
        engine(many_images, thresholds[:1])


@pytest.fixture(scope="module")
def single_image(testing_model):
    return to_tflite_single_image(testing_model)


def test_single_image_graph_decides_as_the_simulated_evaluation(
    segments, single_image, many_images, lite_probs
):
    """The one-call graph (exit decisions as TFLite IF ops) takes exactly the decisions of the
    simulated evaluation, image by image, at three budget levels; segment counts follow."""
    engine = LiteEarlyExit(segments, workers=1, single_image=single_image)
    for p in (4, 20, 36):
        thresholds = evaluation.budgeted_thresholds(lite_probs, p)
        exits, classes, confidence = _simulated(lite_probs, thresholds)
        before = engine.segment_images.copy()
        outs = [engine(many_images[i : i + 1], thresholds) for i in range(150)]
        np.testing.assert_array_equal([o["exit_index"][0] for o in outs], exits)
        np.testing.assert_array_equal([o["class_id"][0] for o in outs], classes)
        np.testing.assert_array_equal([o["probability"][0] for o in outs], confidence)
        assert len(set(exits.tolist())) > 1
        reached = [(exits >= k).sum() for k in range(3)]
        np.testing.assert_array_equal(engine.segment_images - before, reached)
    # Batches still run the segments.
    out = engine(many_images, thresholds)
    np.testing.assert_array_equal(out["exit_index"], exits)


def test_single_image_graph_is_checked(segments, single_image, content, tmp_path):
    with pytest.raises(ValueError, match=r"not the flatbuffer of .*to_tflite_single_image"):
        LiteEarlyExit(segments, single_image=content)
    with pytest.raises(FileNotFoundError, match=r"No TFLite file at"):
        LiteEarlyExit(segments, single_image=str(tmp_path / "absent.tflite"))
    with pytest.raises(ValueError, match=r"`content` is not a TFLite model"):
        LiteEarlyExit(segments, single_image=b"garbage!")


def test_early_exit_reads_a_folder_of_segments(
    segments, single_image, tmp_path, many_images, lite_probs
):
    """The layout of export_model(..., tflite=True)'s tflite_segments/ (tests/test_export.py)."""
    for k, content in enumerate(segments, start=1):
        (tmp_path / f"segment{k}.tflite").write_bytes(content)
    thresholds = evaluation.budgeted_thresholds(lite_probs, 20)
    exits = _simulated(lite_probs, thresholds)[0]
    engine = LiteEarlyExit(str(tmp_path), thresholds)
    assert (engine.num_exits, engine.image_shape, engine.num_classes) == (3, (16, 16, 3), 10)
    assert engine._single is None
    np.testing.assert_array_equal(engine(many_images)["exit_index"], exits)
    (tmp_path / "single_image.tflite").write_bytes(single_image)
    engine = LiteEarlyExit(str(tmp_path), thresholds)
    assert engine._single is not None  # found in the folder
    assert [engine(many_images[i : i + 1])["exit_index"][0] for i in range(20)] == list(exits[:20])


def test_early_exit_bad_input_is_rejected(segments, tmp_path):
    engine = LiteEarlyExit(segments, workers=1)
    with pytest.raises(ValueError, match=r"No thresholds.*Received: thresholds=None"):
        engine(np.zeros((1, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match=r"1-D array of 3 values.*Received: shape \(4,\)"):
        engine(np.zeros((1, 16, 16, 3), "float32"), [0.5] * 4)
    with pytest.raises(ValueError, match=r"must not contain NaN"):
        LiteEarlyExit(segments, [0.5, np.nan])
    with pytest.raises(ValueError, match=r"Received: shape \(1, 8, 8, 3\)"):
        engine(np.zeros((1, 8, 8, 3), "float32"), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"Segment 2 does not chain"):
        LiteEarlyExit([segments[0], segments[2], segments[1]])
    with pytest.raises(ValueError, match=r"Segment 3 does not chain"):
        LiteEarlyExit(segments[:2] + [segments[1]])
    with pytest.raises(ValueError, match=r"list of flatbuffers.*Received: bytes"):
        LiteEarlyExit(segments[0])
    with pytest.raises(FileNotFoundError, match=r"No segment1.tflite in"):
        LiteEarlyExit(str(tmp_path))
    with pytest.raises(ValueError, match=r"`content` is not a TFLite model"):
        LiteEarlyExit([b"garbage!"])


def test_concurrent_calls_take_turns(segments, content, many_images, lite_probs):
    from concurrent.futures import ThreadPoolExecutor

    thresholds = evaluation.budgeted_thresholds(lite_probs, 20)
    engine = LiteEarlyExit(segments, thresholds, workers=2, sub_batch=8)
    classifier = LiteClassifier(content, workers=2, sub_batch=8)
    batches = [many_images[i : i + 30] for i in range(0, 150, 30)] * 2
    with ThreadPoolExecutor(4) as pool:
        exits = list(pool.map(lambda x: engine(x)["exit_index"], batches))
        probs = list(pool.map(classifier, batches))
    want = _simulated(lite_probs, thresholds)[0]
    np.testing.assert_array_equal(np.concatenate(exits[:5]), want)
    np.testing.assert_array_equal(np.concatenate(exits[5:]), want)
    np.testing.assert_allclose(np.concatenate(probs[:5], axis=1), lite_probs, atol=2e-6)


def test_public_names_resolve():
    import msdnet_tf

    assert msdnet_tf.LiteClassifier is LiteClassifier
    assert msdnet_tf.LiteEarlyExit is LiteEarlyExit
    assert msdnet_tf.EarlyExitClassifier is EarlyExitClassifier
    for name in msdnet_tf.__all__:
        assert getattr(msdnet_tf, name) is not None, name
