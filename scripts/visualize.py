"""What each exit looks at: Grad-CAM pages of a trained MSD-Net (or any Keras classifier).

    python scripts/visualize.py --model runs/digits                      # a run folder
    python scripts/visualize.py --model runs/digits --classes 3,8 --layer features
    python scripts/visualize.py --model runs/c10/best.keras --data cifar10 \
        --data_dir /data/cifar --hardest 8 --class_name truck --out runs/c10/pages
    python scripts/visualize.py --model runs/a --compare runs/b --pages grid,compare

Writes grid.png (images x exits, "(k/K)" per row), cams/img{index:05d}_exit{k}.png,
class_{name}.png, saliency.png, class_model.png, per_exit.png, per_class_table.png,
compare.png (with --compare), animations/*.gif (when training recorded them) and index.html
into --out (default: <run folder>/visualize). See `msdnet_tf.visualize`.
"""

import os
import sys

from absl import app, flags

from msdnet_tf.visualize import LAYER_CHOICES, PAGES, visualize

_MODEL = flags.DEFINE_string("model", None, "A training run folder or a .keras checkpoint.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <run folder>/visualize).")
_DATA = flags.DEFINE_string("data", None, "Data set: digits, cifar10, cifar100, imagenet "
                            "(default: the run's, else digits).")  # fmt: skip
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where CIFAR archives / ImageNet folders are.")
_CLASSES = flags.DEFINE_list("classes", None, "Grid rows: images of these class names.")
_INDICES = flags.DEFINE_list("indices", None, "Grid rows: these test-set indices.")
_HARDEST = flags.DEFINE_integer("hardest", None, "Grid rows: the N hardest test images.")
_EASIEST = flags.DEFINE_integer("easiest", None, "Grid rows: the N easiest test images.")
_NUM = flags.DEFINE_integer("num_images", 8, "Grid rows when no other choice is given.")
_EXITS = flags.DEFINE_list("exits", None, "Exits to show, 1-based (default: all).")
_LAYER = flags.DEFINE_enum("layer", "conv_out", LAYER_CHOICES,
                           "conv_out: each head's last conv; features: the block features the "
                           "head reads (as the Grad-CAM blog).")  # fmt: skip
_CLASS = flags.DEFINE_string("class_name", None, "Class of the per-class page (default: the "
                             "class on which the exits differ most).")  # fmt: skip
_COMPARE = flags.DEFINE_string("compare", None, "A second run folder or .keras checkpoint.")
_PAGES = flags.DEFINE_list("pages", list(PAGES), f"Pages to draw, of {list(PAGES)}.")
_STEPS = flags.DEFINE_integer("class_model_steps", 64, "Gradient-ascent steps of class models.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "model.keras", ["model.keras", "best.keras"],
                                "Which model of a run folder.")  # fmt: skip
flags.mark_flags_as_required(["model"])


def main(argv):
    del argv
    model = _MODEL.value
    out = _OUT.value
    if out is None:
        base = model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model))
        out = os.path.join(base, "visualize")
    try:
        files = _run(model, out)
    except (FileNotFoundError, ValueError) as error:  # bad arguments: the message says why
        sys.exit(f"visualize.py: {error}")
    for key in ("grid", "class", "saliency", "class_model", "per_exit", "compare"):
        if key in files:
            print(f"{key:>12}: {files[key]}")
    print(f"{'cams':>12}: {len(files['cams'])} PNGs in {os.path.join(out, 'cams')}")
    print(f"{'animations':>12}: {len(files['animations'])} GIFs")
    print(f"Browse: {files['index']}")


def _run(model: str, out: str) -> dict:
    return visualize(
        model, out, data=_DATA.value, data_dir=_DATA_DIR.value, classes=_CLASSES.value,
        indices=[int(i) for i in _INDICES.value] if _INDICES.value else None,
        hardest=_HARDEST.value, easiest=_EASIEST.value, num_images=_NUM.value,
        exits=[int(k) for k in _EXITS.value] if _EXITS.value else None, layer=_LAYER.value,
        class_name=_CLASS.value, compare=_COMPARE.value, pages=_PAGES.value,
        class_model_steps=_STEPS.value, checkpoint=_CHECKPOINT.value,
    )  # fmt: skip


if __name__ == "__main__":
    app.run(main)
