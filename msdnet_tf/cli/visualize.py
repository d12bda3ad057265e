"""msdnet-visualize: what each exit looks at, as Grad-CAM pages of a run (or any Keras model).

    msdnet-visualize --model runs/digits                           # a run folder, model.keras
    msdnet-visualize --model runs/digits --checkpoint best.keras --classes 3,8
    msdnet-visualize --model runs/c10/best.keras --hardest 8 --class_name truck --out pages
    msdnet-visualize --model x.keras --data cifar10 --data_dir /data/cifar --out pages
    msdnet-visualize --model runs/a --compare runs/b --pages grid,compare

Writes grid.png (images x exits, "(k/K)" per row), cams/img{index:05d}_exit{k}.png,
class_{name}.png, saliency.png, class_model.png, per_exit.png, per_class_table.png,
compare.png (with --compare), animations/*.gif (when training recorded them) and index.html
(which first names the checkpoint and the evaluation drawn) into --out (default
<run>/visualize, or <run>/visualize_<checkpoint> for another checkpoint than model.keras). A
run's checkpoint is drawn with its own evaluation (computed first when it has none). See
`msdnet_tf.visualize`.
"""

import os

from absl import app, flags

from msdnet_tf.cli import program
from msdnet_tf.visualize.exits import LAYER_CHOICES
from msdnet_tf.visualize.pages import PAGES

__all__ = ["main"]

_MODEL = flags.DEFINE_string("model", None, "A training run folder or a .keras model.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <run>/visualize).")
_CHECKPOINT, _DATA, _DATA_DIR = program.define_run_flags()
_CLASSES = flags.DEFINE_list("classes", None, "Grid rows: images of these class names.")
_INDICES = program.define_integer_list("indices", None, "Grid rows: these test-set indices.")
_HARDEST = flags.DEFINE_integer("hardest", None, "Grid rows: the N hardest test images.",
                                lower_bound=1)  # fmt: skip
_EASIEST = flags.DEFINE_integer("easiest", None, "Grid rows: the N easiest test images.",
                                lower_bound=1)  # fmt: skip
_NUM = flags.DEFINE_integer("num_images", 8, "Grid rows when no other choice is given.",
                            lower_bound=1)  # fmt: skip
_EXITS = program.define_integer_list(
    "exits", None, "Exits to show, 1-based (default: all).", minimum=1
)
_LAYER = flags.DEFINE_enum(
    "layer", "auto", LAYER_CHOICES,
    "auto: gradcam_tf's localizing rule (the block features each head reads, as the Grad-CAM "
    "blog); features: those, by name; conv_out: each head's last conv (2x2).",
)  # fmt: skip
_CLASS = flags.DEFINE_string("class_name", None, "Class of the per-class page (default: the "
                             "class on which the exits differ most).")  # fmt: skip
_COMPARE = flags.DEFINE_string("compare", None, "A second run folder or .keras model.")
_PAGES = program.define_choice_list("pages", list(PAGES), PAGES, "Pages to draw.")
_STEPS = flags.DEFINE_integer("class_model_steps", 64, "Gradient-ascent steps of class models.",
                              lower_bound=1)  # fmt: skip
flags.mark_flags_as_required(["model"])


def _default_out(path: str, checkpoint: str) -> str:
    if os.path.isdir(path):
        stem = checkpoint[: -len(".keras")] if checkpoint.endswith(".keras") else checkpoint
        return os.path.join(path, "visualize" if stem == "model" else f"visualize_{stem}")
    return os.path.join(os.path.dirname(os.path.abspath(path)), "visualize")


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    from msdnet_tf.visualize import open_source, visualize

    open_source(_MODEL.value, _CHECKPOINT.value, _DATA.value, _DATA_DIR.value)  # path errors first
    out = _OUT.value or _default_out(_MODEL.value, _CHECKPOINT.value)
    program.check_writable(out, "--out")
    files = visualize(
        _MODEL.value, out, data=_DATA.value, data_dir=_DATA_DIR.value, classes=_CLASSES.value,
        indices=program.integers(_INDICES.value), hardest=_HARDEST.value, easiest=_EASIEST.value,
        num_images=_NUM.value, exits=program.integers(_EXITS.value), layer=_LAYER.value,
        class_name=_CLASS.value, compare=_COMPARE.value, pages=_PAGES.value,
        class_model_steps=_STEPS.value, checkpoint=_CHECKPOINT.value,
        progress=program.progress(),
    )  # fmt: skip
    for key in ("grid", "class", "saliency", "class_model", "per_exit", "compare"):
        if key in files:
            print(f"{key:>12}: {files[key]}")
    print(f"{'cams':>12}: {len(files['cams'])} PNGs in {os.path.join(out, 'cams')}")
    print(f"{'animations':>12}: {len(files['animations'])} GIFs")
    print(f"Browse: {files['index']}")


def main():
    program.run(_main, "msdnet-visualize")


if __name__ == "__main__":
    main()
