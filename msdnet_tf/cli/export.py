"""msdnet-export: a trained MSD-Net as a SavedModel (every exit + real early exit), .keras, TFLite.

    msdnet-export --workdir runs/digits_demo --p 5 --tflite     # into runs/digits_demo/export
    msdnet-export --workdir runs/c10 --checkpoint best.keras --p 10 --out /srv/models/c10
    msdnet-export --model x.keras --thresholds 0.9,0.8,0.7 --data cifar10 --out /srv/models/x
    saved_model_cli show --all --dir runs/digits_demo/export/saved_model

With ``--workdir``, the checkpoint is exported with the thresholds of budget level ``--p``
(q = p / 20) of ITS OWN evaluation (``<run>/eval/<checkpoint>``, evaluated now if missing or
describing other weights), and the export is checked on the test split against that evaluation
(``export_check.json``: the SavedModel's probabilities, its early exit equal to the simulated
one, wall-clock speed-ups; `msdnet_tf.serving.export_check.export_run`). ``--model`` exports any
``.keras`` MSD-Net, with ``--thresholds`` (K or K-1 numbers) as its default thresholds.

The SavedModel serves uint8 pixels too (``serving_pixels``, ``early_exit_pixels``...: the data
set's normalisation inside the graph) and class names, and ships its metadata
(``assets/msdnet_tf.json``): a run's data set gives them; a ``--model`` needs ``--data`` for
them. A run's export also has one early exit per budget level of ``--budgets``
(``early_exit_p5``, ``early_exit_pixels_p5``..., thresholds baked in: TF Serving's row format).
``--tflite`` adds ``model.tflite`` (every exit; `msdnet_tf.LiteClassifier`) and
``tflite_segments/`` (the TFLite early exit, `msdnet_tf.LiteEarlyExit`).
"""

import os

from absl import app, flags, logging

from msdnet_tf.cli import program

__all__ = ["main"]

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder.")
_CHECKPOINT, _DATA, _DATA_DIR = program.define_run_flags()
_MODEL = flags.DEFINE_string("model", None, "A .keras MSD-Net, instead of --workdir.")
_OUT = flags.DEFINE_string(
    "out", None, "Output folder (default: <run>/export, or <run>/export_<checkpoint>)."
)
_P = flags.DEFINE_float(
    "p", 20.0, "Budget level of the run's budgeted evaluation whose thresholds are the default "
    "early exit (q = p / 20; p = 20 is the even split).", lower_bound=0.0,
)  # fmt: skip
_THRESHOLDS = flags.DEFINE_list(
    "thresholds", None, "Default thresholds of a --model (K or K-1 numbers, e.g. 0.9,0.8)."
)
_TFLITE = flags.DEFINE_bool(
    "tflite", False, "Also write model.tflite (every exit) and tflite_segments/ (early exit)."
)
_BUDGETS = program.define_integer_list(
    "budgets", ["5", "10", "20", "30"], "Budget levels of the run's evaluation that get their own "
    "early-exit signatures, thresholds baked in (early_exit_p5, ...; empty: none).", minimum=1,
)  # fmt: skip
_FOLD = flags.DEFINE_bool(
    "fold", False, "Serve the BatchNorm-folded model (same outputs to float rounding; faster)."
)
flags.register_multi_flags_validator(
    ["workdir", "model"],
    lambda values: bool(values["workdir"]) != bool(values["model"]),
    "Give exactly one of --workdir and --model.",
)


def _floats(values, flag: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise app.UsageError(
            f"{flag} must be numbers separated by commas. Received: {flag}={','.join(values)}"
        ) from None


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # tf.saved_model.save's INFO lines hide the result
    if _WORKDIR.value:
        from msdnet_tf.runs import Run
        from msdnet_tf.serving.export_check import export_run

        if _THRESHOLDS.value:
            raise app.UsageError(
                "--thresholds goes with --model; a run's thresholds come from its evaluation "
                f"(--p). Received: --thresholds={','.join(_THRESHOLDS.value)}"
            )
        if _DATA.value or _DATA_DIR.value:
            raise app.UsageError(
                "--data and --data_dir go with --model; a run exports with its own data set. "
                f"Received: --data={_DATA.value}, --data_dir={_DATA_DIR.value}"
            )
        run = Run.open(_WORKDIR.value, _CHECKPOINT.value)
        out = program.check_writable(_OUT.value or run.export_dir, "--out")
        check = export_run(
            _WORKDIR.value, out, p=_P.value, tflite=_TFLITE.value, checkpoint=_CHECKPOINT.value,
            progress=program.progress(), fold=_FOLD.value, budgets=program.integers(_BUDGETS.value),
        )  # fmt: skip
        early = check["early_exit"]
        print(f"Exported {check['checkpoint']['name']} at p = {check['p']:g}: early exit top-1 "
              f"{100 * early['accuracy']:.2f}%, exits {early['exit_counts']}; decisions "
              f"{'equal to' if early['equals_simulated_evaluation'] else 'DIFFERENT FROM'} "
              "the simulated evaluation")  # fmt: skip
        budgets = check["budgets"]
        if budgets:
            same = all(all(b["equals_simulated_evaluation"].values()) for b in budgets.values())
            print(f"Budget levels {', '.join(budgets)} (early_exit_p*, early_exit_pixels_p*): "
                  f"decisions {'equal to' if same else 'DIFFERENT FROM'} the simulated "
                  "evaluation")  # fmt: skip
        pixels = check["pixels"]
        print(f"uint8-pixel signatures: max |diff| {pixels['serving_max_abs_diff']:.3g} from "
              "serving_default on the normalised images; class names "
              f"{'served' if pixels['class_names_equal'] else 'WRONG'}")  # fmt: skip
        paths = check["paths"]
    else:
        paths = _export_model()
    for name, written in paths.items():
        print(f"{name}: {written}")


def _export_model() -> dict:
    """``--model``: the file's export, with its data set's normalisation and class names when
    ``--data`` names it."""
    from msdnet_tf.runs import CheckpointIdentity, Run
    from msdnet_tf.serving.export import export_model

    if not os.path.isfile(_MODEL.value):
        raise FileNotFoundError(f"No model to export. Received: --model={_MODEL.value}")
    if not _OUT.value:
        raise app.UsageError(f"--model needs --out. Received: --model={_MODEL.value}")
    if _BUDGETS.value != _BUDGETS.default:
        raise app.UsageError(
            "--budgets goes with --workdir (levels of a run's evaluation). Received: "
            f"--budgets={','.join(_BUDGETS.value)}"
        )
    program.check_writable(_OUT.value, "--out")
    thresholds = _floats(_THRESHOLDS.value, "--thresholds") if _THRESHOLDS.value else None
    name = os.path.basename(_MODEL.value)
    kwargs = {}
    if _DATA.value:
        run = Run.open(_MODEL.value, data=_DATA.value, data_dir=_DATA_DIR.value)
        splits = run.splits()  # the model must fit the data set: one error before any work
        model, identity = run.model, run.identity
        kwargs = {"mean": splits.mean, "std": splits.std, "class_names": splits.class_names}
    else:
        import keras

        model = keras.saving.load_model(_MODEL.value)
        identity = CheckpointIdentity.of(model, name)
        print("No --data: the SavedModel takes normalised float32 images only (no *_pixels "
              "signatures) and names classes by their ids.")  # fmt: skip
    metadata = {"data": _DATA.value, "checkpoint": identity.to_json()}
    return export_model(
        model, _OUT.value, thresholds=thresholds, tflite=_TFLITE.value, fold=_FOLD.value,
        metadata=metadata, progress=program.progress(), **kwargs,
    )  # fmt: skip


def main():
    program.run(_main, "msdnet-export")


if __name__ == "__main__":
    main()
