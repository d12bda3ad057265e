"""Do the explanations point at the object? Every method, exit and target layer on a set with
known boxes (benchmarks/localization_data.py: a real digit among clutter cut from other digits).

Trains (once; cached under benchmarks/out/localization/) the ``digits`` MSD-Net preset and a
plain CNN on the training images, then, on the evaluation images, explains the TRUE class with
every method of gradcam_tf at every exit and target layer (``exit{k}_features``, the block
features the head reads, 8x8; ``exit{k}_head1_relu``, the head's first conv, 4x4;
``exit{k}_conv_out``, the head's last conv, 2x2; "auto", the automatic rule of
`gradcam_tf.layers`), and the plain CNN with tf-keras-vis' Gradcam (its own automatic layer,
its corner-aligned zoom) and with gradcam_tf's defaults. Metrics, averaged over the images:

- pointing game: whether the map's maximum lies inside the object's box (Zhang et al., 2016,
  without tolerance); a plateau of equal maxima points at its centroid;
- energy: the fraction of the map's sum inside the box (Wang et al., Score-CAM, 2020);
- deletion and insertion AUC (`gradcam_tf.metrics`; Petsiuk et al., RISE, 2018) of the
  explained exit's probability of the true class (lower / higher is better);

with a random-map baseline (uniform noise: its pointing game is the boxes' area fraction).

Usage:
    .venv/bin/python benchmarks/localization.py            # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/localization.py --images 100 --causal-images 32 --epochs 10

Writes benchmarks/out/localization/results.json, table.md and localization.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from localization_data import make_localization_set, normalize  # noqa: E402

import gradcam_tf  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "localization")
CAMS = {
    "Grad-CAM": gradcam_tf.GradCAM,
    "Grad-CAM++": gradcam_tf.GradCAMPlusPlus,
    "XGrad-CAM": gradcam_tf.XGradCAM,
    "Layer-CAM": gradcam_tf.LayerCAM,
    "HiResCAM": gradcam_tf.HiResCAM,
    "Score-CAM": gradcam_tf.ScoreCAM,
}


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def plain_cnn(num_classes: int = 10):
    """conv-conv-pool (16x16) conv-conv-pool (8x8) conv ``last_conv`` (8x8), GAP, Dense."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for width, name in ((16, "a"), (32, "b")):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv_{name}1")(x)
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv_{name}2")(x)
        x = layers.MaxPooling2D(2, name=f"pool_{name}")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="plain_cnn")


def trained(name: str, build, train, epochs: int, seed: int, out: str):
    """The model cached at <out>/<name>.keras, trained when missing (Adam with a cosine
    schedule, summed per-output cross-entropy; returns the model and the training seconds)."""
    import keras

    path = os.path.join(out, f"{name}.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), None
    keras.utils.set_random_seed(seed)
    model = build()
    outputs = len(model.outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=[loss] * outputs,
        metrics=[["accuracy"]] * outputs,
    )
    x, y = normalize(train.images), train.labels
    start = time.perf_counter()
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: 2e-3 * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
    )
    model.fit(x, [y] * outputs, batch_size=64, epochs=epochs, verbose=2, callbacks=[schedule])
    seconds = time.perf_counter() - start
    model.save(path)
    return model, seconds


def accuracy(model, data) -> list[float]:
    """Top-1 of every output on `data`."""
    outputs = model.predict(normalize(data.images), batch_size=256, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return [float((np.argmax(o, -1) == data.labels).mean()) for o in outputs]


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


def pointing(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) bool: the map's maximum (the centroid of a plateau of maxima) inside the box."""
    hits = np.zeros(len(maps), bool)
    for i, (m, mask) in enumerate(zip(maps, masks)):
        rows, cols = np.nonzero(m >= m.max() - 1e-6)
        r, c = int(round(rows.mean())), int(round(cols.mean()))
        hits[i] = mask[r, c]
    return hits


def energy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) fraction of each map's sum inside its box (0 for an all-zero map)."""
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.maximum(total, 1e-12), 0.0)


def causal(model, x, maps, labels, output, steps) -> tuple[float, float]:
    """Mean deletion and insertion AUC of output `output` (true class probability)."""
    kwargs = dict(steps=steps, outputs=output, batch_size=256)
    deletion = gradcam_tf.deletion_auc(model, x, maps, labels, **kwargs).auc.mean()
    insertion = gradcam_tf.insertion_auc(model, x, maps, labels, **kwargs).auc.mean()
    return float(deletion), float(insertion)


def score(model, x, maps, data, output, causal_count, steps) -> dict:
    """Every metric of one set of maps."""
    masks = data.box_masks()
    row = {
        "pointing": float(pointing(maps, masks).mean()),
        "energy": float(energy(maps, masks).mean()),
    }
    n = min(causal_count, len(x))
    if n:
        row["deletion"], row["insertion"] = causal(
            model, x[:n], maps[:n], data.labels[:n], output, steps
        )
    return row


# ------------------------------------------------------------------------------------------
# The runs
# ------------------------------------------------------------------------------------------


def msdnet_rows(model, data, args) -> list[dict]:
    """One row per (method, layer, resize, exit)."""
    x, labels = normalize(data.images), data.labels
    exits = len(model.outputs)
    auto = gradcam_tf.find_target_layers(model)
    layer_sets = {
        "features": [f"exit{k}_features" for k in range(1, exits + 1)],
        "head1": [f"exit{k}_head1_relu" for k in range(1, exits + 1)],
        "conv_out": [f"exit{k}_conv_out" for k in range(1, exits + 1)],
        "auto": "auto",
    }
    rows = []

    def add(method, layer, resize, maps_per_exit, seconds, count=None):
        for k, maps in enumerate(maps_per_exit):
            n = count or len(x)
            sub = data.subset(slice(0, n))
            row = score(model, x[:n], maps, sub, k, args.causal_images, args.steps)
            row.update(method=method, layer=layer, resize=resize, exit=k + 1, images=n)
            row["seconds"] = seconds
            rows.append(row)
            print(json.dumps(row), flush=True)

    for name, method in CAMS.items():
        count = args.scorecam_images if name == "Score-CAM" else len(x)
        explainer = method(model)
        for layer, layers in layer_sets.items():
            resizes = ["bilinear", "zoom"] if name == "Grad-CAM" else ["bilinear"]
            for resize in resizes:
                if layer == "auto" and auto == layer_sets["features"]:  # the same maps: reuse
                    for row in [r for r in rows if _key(r) == (name, "features", resize)]:
                        rows.append(dict(row, layer="auto"))
                    continue
                start = time.perf_counter()
                maps = explainer.explain(x[:count], labels[:count], layers=layers, resize=resize)
                add(name, layer, resize, maps, time.perf_counter() - start, count)
    for name, explainer in (
        ("Saliency", gradcam_tf.Saliency(model)),
        ("SmoothGrad", gradcam_tf.SmoothGrad(model, samples=args.smooth_samples, seed=0)),
    ):
        start = time.perf_counter()
        maps = explainer.explain(x, labels)
        add(name, "input", "-", maps, time.perf_counter() - start)
    noise = np.random.default_rng(1).random((exits, len(x), 32, 32)).astype(np.float32)
    add("random map", "-", "-", list(noise), 0.0)
    return rows, auto


def cnn_rows(model, data, args) -> list[dict]:
    """The plain CNN: tf-keras-vis' Gradcam (its automatic layer and zoom) and ours."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    x, labels = normalize(data.images), data.labels
    rows = []
    start = time.perf_counter()
    theirs = np.asarray(Gradcam(model, clone=False)(CategoricalScore(list(labels)), x))
    ours = {}
    for resize in ("bilinear", "zoom"):
        begin = time.perf_counter()
        ours[resize] = (gradcam_tf.GradCAM(model).explain(x, labels, resize=resize)[0], begin)
    runs = [("tf-keras-vis Gradcam", "auto (last_conv)", "zoom", theirs, start)]
    auto = gradcam_tf.find_target_layers(model)[0]
    runs += [("Grad-CAM (ours)", f"auto ({auto})", r, m, t) for r, (m, t) in ours.items()]
    for method, layer, resize, maps, begin in runs:
        row = score(model, x, maps, data, None, args.causal_images, args.steps)
        row.update(method=method, layer=layer, resize=resize, exit=1, images=len(x))
        row["seconds"] = time.perf_counter() - begin
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# Tables and figure
# ------------------------------------------------------------------------------------------


def _key(row):
    return (row["method"], row["layer"], row["resize"])


def tables(rows: list[dict], cnn: list[dict], exits: int) -> str:
    """Markdown: the pointing game per exit with energy / deletion / insertion, per metric."""
    keys = list(dict.fromkeys(_key(r) for r in rows))
    lookup = {(*_key(r), r["exit"]): r for r in rows}
    parts = []
    for metric, title in (
        ("pointing", "Pointing game (%, higher is better)"),
        ("energy", "Energy inside the box (%, higher is better)"),
        ("deletion", "Deletion AUC (lower is better)"),
        ("insertion", "Insertion AUC (higher is better)"),
    ):
        percent = metric in ("pointing", "energy")
        head = "| method | layer | resize | " + " | ".join(f"exit {k}" for k in range(1, exits + 1))
        lines = [f"**{title}**", "", head + " |", "|---|---|---|" + "---:|" * exits]
        for key in keys:
            cells = []
            for k in range(1, exits + 1):
                value = lookup.get((*key, k), {}).get(metric)
                cells.append(
                    "-" if value is None else (f"{100 * value:.1f}" if percent else f"{value:.3f}")
                )
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    lines = [
        "**Plain CNN baseline** (same data; last conv 8x8)",
        "",
        "| method | layer | resize | pointing % | energy % | deletion | insertion |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in cnn:
        lines.append(
            f"| {r['method']} | {r['layer']} | {r['resize']} | {100 * r['pointing']:.1f} | "
            f"{100 * r['energy']:.1f} | {r.get('deletion', float('nan')):.3f} | "
            f"{r.get('insertion', float('nan')):.3f} |"
        )
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def conditions(model, data) -> str:
    """Markdown: the default Grad-CAM's pointing game per object size and clutter level, for
    every exit (the random map's expectation, the boxes' area fraction, beside it)."""
    maps = gradcam_tf.GradCAM(model).explain(normalize(data.images), data.labels)
    hits = np.stack([pointing(m, data.box_masks()) for m in maps])  # (exits, N)
    areas = data.box_masks().mean(axis=(1, 2))
    exits = len(maps)
    lines = [
        "**Default Grad-CAM by condition** (pointing game %; random: mean box area %)",
        "",
        "| object px | clutter | images | "
        + " | ".join(f"exit {k}" for k in range(1, exits + 1))
        + " | random |",
        "|---:|---:|---:|" + "---:|" * (exits + 1),
    ]
    for size in np.unique(data.sizes):
        for level in np.unique(data.clutter):
            chosen = (data.sizes == size) & (data.clutter == level)
            cells = " | ".join(f"{100 * hits[k, chosen].mean():.1f}" for k in range(exits))
            lines.append(
                f"| {size} | {level} | {chosen.sum()} | {cells} | "
                f"{100 * areas[chosen].mean():.1f} |"
            )
    return "\n".join(lines) + "\n"


def figure(model, data, path: str, count: int = 6) -> None:
    """Rows: images (box in green); columns: the image, the default Grad-CAM of every exit,
    then the previous default (head's last conv, corner-aligned zoom) at the last exit."""
    x, labels = normalize(data.images[:count]), data.labels[:count]
    cam = gradcam_tf.GradCAM(model)
    default = cam.explain(x, labels)
    old = cam.explain(x, labels, layers="last_spatial", resize="zoom")[-1]
    scale, cells = 4, []
    for i in range(count):
        image = (data.images[i] * 255).astype(np.uint8)
        row = [image] + [gradcam_tf.overlay(image, m[i], alpha=0.5) for m in default]
        row.append(gradcam_tf.overlay(image, old[i], alpha=0.5))
        big = []
        for cell in row:
            cell = cv2.resize(cell, (32 * scale, 32 * scale), interpolation=cv2.INTER_NEAREST)
            top, left, bottom, right = (int(v) * scale for v in data.boxes[i])
            cv2.rectangle(cell, (left, top), (right - 1, bottom - 1), (0, 255, 0), 1)
            big.append(np.pad(cell, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        cells.append(np.concatenate(big, axis=1))
    sheet = np.concatenate(cells, axis=0)
    header = np.full((22, sheet.shape[1], 3), 255, np.uint8)
    width = 32 * scale + 4
    titles = ["image + box"] + [f"exit {k} (auto)" for k in range(1, len(default) + 1)]
    titles.append("old: 2x2, zoom")
    for j, title in enumerate(titles):
        cv2.putText(header, title, (j * width + 6, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
    gradcam_tf.save_png(path, np.concatenate([header, sheet], axis=0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--images", type=int, default=300, help="evaluation images")
    parser.add_argument("--causal-images", type=int, default=64, help="for deletion/insertion")
    parser.add_argument("--scorecam-images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--smooth-samples", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 16])
    parser.add_argument("--clutter", type=int, nargs="+", default=[0, 3, 6])
    parser.add_argument("--out", default=OUT, help="cache and result folder")
    args = parser.parse_args(argv)
    out = args.out
    os.makedirs(out, exist_ok=True)
    from msdnet_tf.model.presets import build_preset

    train = make_localization_set("train", args.train, args.sizes, args.clutter, seed=0)
    test = make_localization_set("test", args.images, args.sizes, args.clutter, seed=1)
    msdnet, msd_seconds = trained("msdnet_digits", lambda: build_preset("digits"), train,
                                  args.epochs, 0, out)  # fmt: skip
    cnn, cnn_seconds = trained("plain_cnn", plain_cnn, train, args.epochs, 0, out)
    top1 = accuracy(msdnet, test)
    rows, auto = msdnet_rows(msdnet, test, args)
    baseline = cnn_rows(cnn, test, args)
    areas = float(test.box_masks().mean())
    summary = {
        "command": "python benchmarks/localization.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "args": vars(args),
        "msdnet_top1": top1,
        "cnn_top1": accuracy(cnn, test),
        "train_seconds": {"msdnet": msd_seconds, "cnn": cnn_seconds},
        "auto_layers": auto,
        "box_area_fraction": areas,
        "rows": rows,
        "cnn_rows": baseline,
    }  # fmt: skip
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = tables(rows, baseline, len(msdnet.outputs)) + "\n" + conditions(msdnet, test)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    figure(msdnet, test, os.path.join(out, "localization.png"))
    print(text)
    print("top-1 per exit", [round(100 * a, 1) for a in top1], "auto layers", auto)
    print("box area fraction", round(100 * areas, 1))


if __name__ == "__main__":
    main()
