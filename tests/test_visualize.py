"""msdnet_tf.visualize: the Grad-CAM pages of a run folder or checkpoint."""

import os
import re

import cv2
import gradcam_models
import numpy as np
import pytest
from PIL import Image

from gradcam_tf.callbacks import frames_to_gif
from msdnet_tf import evaluation, visualize
from msdnet_tf.config import base_config
from msdnet_tf.data import load_dataset
from msdnet_tf.model.presets import build_preset
from msdnet_tf.runs import Run
from msdnet_tf.training import write_config
from msdnet_tf.visualize.cells import RIGHT, WRONG, overlay_cell

NUM_IMAGES = 4
K = 3  # exits of the `testing` preset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as training leaves it: model, config, evaluation files, a training GIF."""
    folder = str(tmp_path_factory.mktemp("run"))
    model = build_preset("testing")
    write_config(base_config("testing", "digits", epochs=1, batch_size=32), folder)
    model.save(os.path.join(folder, "model.keras"))
    other = build_preset("testing")
    rng = np.random.default_rng(5)
    for weight in other.trainable_weights:
        value = np.asarray(weight)
        weight.assign(value + rng.normal(0, 0.1, value.shape).astype(value.dtype))
    other.save(os.path.join(folder, "best.keras"))
    Run.open(folder).evaluate()
    frame = os.path.join(folder, "f.png")
    Image.new("RGB", (30, 20), "white").save(frame)
    frames_to_gif([frame, frame], os.path.join(folder, "gradcam_epochs", "img00004.gif"))
    return folder


@pytest.fixture(scope="module")
def pages(run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pages"))
    files = visualize.visualize(run, out, num_images=NUM_IMAGES, class_model_steps=3,
                                smooth_samples=2, progress=False)  # fmt: skip
    return out, files


def _test_predictions(model, splits):
    """(K, N) top-1 class of every exit for the whole test set, from the model itself."""
    outputs = model(splits.normalize(splits.test_images()), training=False)
    return np.stack([np.asarray(o).argmax(-1) for o in outputs])


def _framed_cells(path):
    """The framed cells of a saved page, row by row: (frame colour, the picture inside)."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    boxes = []
    for colour in (RIGHT, WRONG):
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        mask = (np.abs(pixels - rgb).sum(-1) <= 6).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        # A frame is a large ring of its colour; the title's glyphs are small.
        boxes += [(y, x, w, h, colour) for x, y, w, h, _ in stats[1:] if w > 40 and h > 40]
    rows = {}
    for y, x, w, h, colour in sorted(boxes):
        rows.setdefault(y, []).append((colour, pixels[y + 6 : y + h - 6, x + 6 : x + w - 6]))
    return list(rows.values())


def _difference(crop, picture, margin=None):
    """Mean absolute difference (0-255) of a cell's crop and the picture drawn there.

    The crop leaves out the frame: 6 pixels inside its outer edge, about 4 inside the picture's
    edge, so as many pixels (at the picture's scale) of each side of the picture are left out.
    """
    picture = np.asarray(picture)
    if margin is None:
        margin = round(4 * len(picture) / (len(crop) + 8))
    picture = picture[margin : len(picture) - margin, margin : len(picture) - margin]
    small = [
        cv2.resize(np.float32(a), (24, 24), interpolation=cv2.INTER_AREA) for a in (crop, picture)
    ]
    return float(np.abs(small[0] - small[1]).mean())


def test_every_page_is_written(pages):
    out, files = pages
    for key in ("grid", "class", "saliency", "class_model", "per_exit", "per_class_table"):
        with Image.open(files[key]) as picture:
            assert picture.size[0] > 300 and picture.size[1] > 200, key
    assert os.path.dirname(files["grid"]) == out
    assert files["animations"] == [os.path.join(out, "animations", "img00004.gif")]
    assert "compare" not in files  # only with a second model


def test_one_png_per_image_and_exit_with_predictable_names(pages):
    out, files = pages
    names = sorted(os.listdir(os.path.join(out, "cams")))
    assert len(names) == NUM_IMAGES * K
    assert all(re.fullmatch(r"img\d{5}_exit[1-3]\.png", n) for n in names)
    indices = sorted({int(n[3:8]) for n in names})
    assert len(indices) == NUM_IMAGES
    for name in names:
        with Image.open(os.path.join(out, "cams", name)) as picture:
            assert picture.size == (128, 128) and picture.mode == "RGB"


def test_row_labels_match_the_evaluation_difficulty(run, pages):
    _, files = pages
    table, _ = evaluation.read_difficulty_csv(os.path.join(run, "eval", "model", "difficulty.csv"))
    expected = visualize.select_images(table.labels, [str(c) for c in range(10)], table,
                                       n=NUM_IMAGES)  # fmt: skip
    rows = files["grid_rows"]
    assert [int(re.match(r"#(\d+)", r).group(1)) for r in rows] == expected.tolist()
    for row, index in zip(rows, expected):
        assert row.endswith(f"({table.n_correct[index]}/{K})")
    counts = [table.n_correct[i] for i in expected]
    assert counts == sorted(counts)  # the hardest first


def test_grid_counts_equal_the_models_own_predictions(run, tmp_path):
    source = visualize.open_source(run)
    splits = load_dataset("digits", image_size=16)
    indices = np.array([0, 5, 9])
    raw = splits.test_images()[indices]
    labels = splits.test_y[indices]
    inputs = splits.normalize(raw)
    grid = visualize.exit_grid(source.model, inputs, raw, labels, indices, splits.class_names,
                               str(tmp_path), per_image_files=False)  # fmt: skip
    probs = np.stack([o.numpy() for o in source.model(inputs, training=False)])
    np.testing.assert_array_equal(grid["n_correct"], (probs.argmax(-1) == labels).sum(0))
    # the default layer: the automatic rule's, each head's block features (not its 2x2 conv)
    assert grid["maps"].layers == ["exit1_features", "exit2_features", "exit3_features"]
    assert grid["cams"] == []
    heads = visualize.exit_grid(source.model, inputs, raw, labels, indices, splits.class_names,
                                str(tmp_path), layer="conv_out", per_image_files=False)  # fmt: skip
    assert heads["maps"].layers == ["exit1_conv_out", "exit2_conv_out", "exit3_conv_out"]
    named = visualize.explain_exits(source.model, inputs, layer="features")
    np.testing.assert_array_equal(named.maps, grid["maps"].maps)


def test_grid_cells_show_each_images_map_with_the_right_mark(run, tmp_path):
    source = visualize.open_source(run)
    splits = load_dataset("digits", image_size=16)
    correct = _test_predictions(source.model, splits) == splits.test_y[None]
    some_right = int(np.flatnonzero(correct.any(0))[0])
    all_wrong = np.flatnonzero(~correct.any(0))[1:3].tolist()
    indices = np.array(list(dict.fromkeys([0, some_right, *all_wrong])))  # distinct images
    raw = splits.test_images()[indices]
    labels = splits.test_y[indices]
    grid = visualize.exit_grid(source.model, splits.normalize(raw), raw, labels, indices,
                               splits.class_names, str(tmp_path))  # fmt: skip
    maps = grid["maps"].maps
    rows = _framed_cells(grid["path"])
    assert [len(row) for row in rows] == [K] * len(indices)
    for i, row in enumerate(rows):
        for k, (colour, crop) in enumerate(row):
            assert colour == (RIGHT if correct[k, indices[i]] else WRONG), (i, k)
            own = _difference(crop, overlay_cell(raw[i], maps[k, i], 128))
            others = [_difference(crop, overlay_cell(raw[j], maps[k, j], 128))
                      for j in range(len(indices)) if j != i]  # fmt: skip
            assert own < 2.0 and min(others) > 2 * own + 2.0, (i, k, own, others)
            with Image.open(tmp_path / "cams" / f"img{indices[i]:05d}_exit{k + 1}.png") as cam:
                np.testing.assert_array_equal(
                    np.asarray(cam), overlay_cell(raw[i], maps[k, i], 128)
                )
    assert len(grid["cams"]) == len(indices) * K


def test_index_html_links_every_file_and_shows_the_per_class_table(run, pages):
    out, files = pages
    with open(files["index"], encoding="utf-8") as f:
        page = f.read()
    links = set(re.findall(r"(?:src|href)='([^'#]+)'", page))
    written = {
        os.path.relpath(os.path.join(folder, name), out).replace(os.sep, "/")
        for folder, _, names in os.walk(out)
        for name in names
    }
    assert links == written - {"index.html"}
    assert "(k/3)" in page
    # Every row of the tables: the class's accuracy at each exit, from the model itself.
    splits = load_dataset("digits", image_size=16)
    predicted = _test_predictions(visualize.open_source(run).model, splits)
    tables = re.findall(r"<table>.*?</table>", page)
    assert sorted(len(re.findall(r"<tr><td>", t)) for t in tables) == [1, 10]
    for table in tables:
        header = re.findall(r"<th>([^<]*)</th>", table)
        assert header == ["class", "n", "B1", "B2", "B3"]
        for name, support, cells in re.findall(r"<tr><td>(\d)</td><td>(\d+)</td>(.*?)</tr>", table):
            members = splits.test_y == int(name)
            assert int(support) == members.sum()
            expected = (predicted[:, members] == int(name)).mean(axis=1)
            shown = re.findall(r"<td>(?:<b>)?([0-9.]+)(?:</b>)?</td>", cells)
            np.testing.assert_allclose([float(v) for v in shown], expected, atol=6e-4)
            bold = [float(v) for v in re.findall(r"<b>([0-9.]+)</b>", cells)]
            assert bold and all(abs(b - expected.max()) < 6e-4 for b in bold)


def test_overlay_hottest_pixel_lies_where_the_cam_peaks():
    cam = np.zeros((8, 8), np.float32)
    cam[5, 2] = 1.0
    grey = np.full((16, 16, 3), 0.5, np.float32)
    picture = overlay_cell(grey, cam, 64).astype(np.float32) / 255.0
    # Decode the overlay: 0.55 * grey + 0.45 * jet(v); the closest v is the map's value there.
    levels = np.arange(256, dtype=np.uint8)[:, None]
    jet = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    palette = 0.55 * 0.5 + 0.45 * jet[:, 0].astype(np.float32) / 255.0
    distance = ((picture[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
    decoded = distance.argmin(-1)
    y, x = np.unravel_index(decoded.argmax(), decoded.shape)
    scale = 64 / 8
    assert abs(y - (5 + 0.5) * scale) <= scale and abs(x - (2 + 0.5) * scale) <= scale


def test_features_layer_and_chosen_exits(run, tmp_path):
    files = visualize.visualize(run, str(tmp_path), indices=[3, 1], exits=[1, 3],
                                layer="features", pages=["grid"], progress=False)  # fmt: skip
    assert sorted(os.listdir(tmp_path / "cams")) == [
        "img00001_exit1.png", "img00001_exit3.png", "img00003_exit1.png", "img00003_exit3.png",
    ]  # fmt: skip
    assert [int(re.match(r"#(\d+)", r).group(1)) for r in files["grid_rows"]] == [3, 1]
    assert all(r.endswith("/2)") for r in files["grid_rows"])


def test_class_selection_and_per_class_view(run, tmp_path):
    files = visualize.visualize(run, str(tmp_path), classes="7", class_name="3",
                                pages=["grid", "class"], progress=False)  # fmt: skip
    assert all("'7'" in row for row in files["grid_rows"])
    assert os.path.basename(files["class"]) == "class_3.png"


def test_select_images_orders_by_difficulty():
    labels = np.array([0, 1, 0, 1, 0])
    n_correct = np.array([3, 0, 1, 3, 0])
    names = ["a", "b"]
    assert visualize.select_images(labels, names, n_correct, n=3).tolist() == [1, 4, 2]
    easiest = visualize.select_images(labels, names, n_correct, n=2, order="easiest")
    assert easiest.tolist() == [0, 3]
    assert visualize.select_images(labels, names, n_correct, "a", n=5).tolist() == [4, 2, 0]


def test_model_comparison_with_a_single_output_model(run, tmp_path):
    source = visualize.open_source(run)
    other = gradcam_models.tiny_cnn(num_classes=10)
    splits = load_dataset("digits", image_size=16)
    indices = np.array([0, 1])
    raw = splits.test_images()[indices]
    page = visualize.compare_models(
        [("msdnet", source.model), ("tiny", other)], splits.normalize(raw), raw,
        splits.test_y[indices], indices, splits.class_names, str(tmp_path / "compare.png"),
    )  # fmt: skip
    assert page["columns"] == ["msdnet\nB1", "msdnet\nB2", "msdnet\nB3", "tiny"]
    maps = visualize.explain_exits(other, splits.normalize(raw))
    assert maps.layers == ["conv2"] and maps.maps.shape == (1, 2, 16, 16)
    # Each row: the image's overlay and mark at every msdnet exit, then at the tiny model.
    both = [visualize.explain_exits(m, splits.normalize(raw)) for m in (source.model, other)]
    expected = [(result, k) for result in both for k in range(result.maps.shape[0])]
    rows = _framed_cells(page["path"])
    assert [len(row) for row in rows] == [4, 4]
    for i, row in enumerate(rows):
        for (colour, crop), (result, k) in zip(row, expected):
            right = result.predicted[k, i] == splits.test_y[indices[i]]
            assert colour == (RIGHT if right else WRONG)
            assert _difference(crop, overlay_cell(raw[i], result.maps[k, i], 112)) < 2.0
    for result, n_correct in zip(both, page["n_correct"]):
        np.testing.assert_array_equal(
            n_correct, (result.predicted == splits.test_y[indices]).sum(0)
        )


def test_compare_page_through_visualize(run, tmp_path):
    files = visualize.visualize(run, str(tmp_path), compare=os.path.join(run, "model.keras"),
                                num_images=2, pages=["compare"], progress=False)  # fmt: skip
    rows = _framed_cells(files["compare"])
    assert [len(row) for row in rows] == [2 * K, 2 * K]
    for row in rows:  # the model beside itself: the same marks and overlays twice
        for (colour, crop), (twin_colour, twin) in zip(row[:K], row[K:]):
            # < 2.0 as each cell against its own overlay above: the twin crops may differ by a
            # pixel of placement, which the 8x8 maps' detail makes visible
            assert colour == twin_colour and _difference(crop, twin, margin=0) < 2.0


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(classes="cat"), ValueError,
         r"Unknown class name 'cat'\. Valid class names: \['0', '1'.*'9'\]"),
        (dict(class_name="dog"), ValueError, r"Valid class names: .*Received: class_name='dog'"),
        (dict(indices=[0, 450]), ValueError, r"valid indices are 0\.\.449\. Received: .*\[450\]"),
        (dict(exits=[4]), ValueError, r"numbered 1\.\.3.*Received: exits=\[4\]"),
        (dict(layer="head"), ValueError, r"`layer` must be one of"),
        (dict(pages=["grid", "movie"]), ValueError, r"Unknown pages \['movie'\]"),
    ],
)  # fmt: skip
def test_bad_arguments(run, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        visualize.visualize(run, str(tmp_path), progress=False, **kwargs)


def test_missing_checkpoint_and_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No model at .*nothing: expected a run folder"):
        visualize.visualize(str(tmp_path / "nothing"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"is not a training run: it has no config\.json"):
        visualize.open_source(str(tmp_path))
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"Expected a \.keras model or a run folder"):
        visualize.open_source(str(tmp_path / "weights.h5"))


def _grid_indices(files):
    return [int(re.match(r"#(\d+)", r).group(1)) for r in files["grid_rows"]]


def test_a_checkpoint_is_drawn_with_its_own_evaluation(run, tmp_path):
    """Scenario of issue 13: --checkpoint best.keras never reuses model.keras's evaluation."""
    files = visualize.visualize(run, str(tmp_path / "best"), checkpoint="best.keras",
                                num_images=6, pages=["grid", "evaluation"],
                                progress=False)  # fmt: skip
    best = Run.open(run, "best.keras")
    stored = best.evaluation(compute=False)  # visualize evaluated best.keras into eval/best/
    assert stored.folder == os.path.join(run, "eval", "best")
    assert stored.checkpoint == best.identity
    difficulty = evaluation.sample_difficulty(stored.test_probs, stored.test_labels)
    names = [str(c) for c in range(10)]
    expected = visualize.select_images(stored.test_labels, names, difficulty, n=6)
    assert _grid_indices(files) == expected.tolist()
    model_difficulty = evaluation.sample_difficulty(
        Run.open(run).evaluation(compute=False).test_probs, stored.test_labels
    )
    assert not np.array_equal(difficulty.n_correct, model_difficulty.n_correct)
    with open(files["index"]) as f:
        page = f.read()
    assert f"best.keras (weights sha256 {best.identity.sha256[:12]})" in page
    # The per-class table of the index is best.keras's, computed from its own predictions.
    predicted = _test_predictions(best.model, best.splits())
    accuracy = (predicted == best.splits().test_y[None]).astype(float)
    zero = best.splits().test_y == 0
    row = f"{100 * accuracy[0][zero].mean():.1f}"
    assert row in page


def test_a_run_with_its_own_hold_out_is_drawn(tmp_path):
    """Scenario of issue 13: ImageNet-style folders, --config.data.validation_size 3."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("n01", "n02"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                cv2.imwrite(str(tmp_path / "data" / split / cls / f"{i}.JPEG"), image)
    folder = tmp_path / "run"
    config = base_config("testing", "imagenet", epochs=1, batch_size=4)
    config.model.num_classes = 2
    config.data.data_dir = str(tmp_path / "data")
    config.data.validation_size = 3
    write_config(config, str(folder))
    build_preset("testing", num_classes=2).save(str(folder / "model.keras"))
    files = visualize.visualize(str(folder), str(tmp_path / "out"), num_images=2,
                                pages=["grid", "class", "evaluation"],
                                progress=False)  # fmt: skip
    assert len(files["grid_rows"]) == 2
    assert Run.open(str(folder)).evaluation(compute=False).val_probs.shape == (K, 3, 2)


def test_a_lone_keras_needs_its_data_and_must_fit_it(tmp_path):
    """Scenario of issue 13: a .keras without config.json is not drawn as if it were digits."""
    path = str(tmp_path / "c100.keras")
    build_preset("testing", num_classes=100).save(path)
    with pytest.raises(ValueError, match=r"no config\.json beside it: give the data set"):
        visualize.visualize(path, str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match=r"classifies 100 classes but digits has 10"):
        visualize.visualize(path, str(tmp_path / "out"), data="digits", progress=False)
    assert not os.path.exists(tmp_path / "out")  # nothing was drawn


def test_a_single_output_checkpoint(tmp_path):
    path = str(tmp_path / "tiny.keras")
    gradcam_models.tiny_cnn(num_classes=10).save(path)
    files = visualize.visualize(path, str(tmp_path / "out"), data="digits", num_images=2,
                                pages=["grid", "class", "evaluation"], progress=False)  # fmt: skip
    assert sorted(os.listdir(tmp_path / "out" / "cams")) == sorted(
        f"img{int(r[1:].split()[0]):05d}_exit1.png" for r in files["grid_rows"]
    )
    assert all(r.endswith("/1)") for r in files["grid_rows"])
    assert os.path.isfile(files["per_class_table"])
