"""msdnet-demo: the main job end to end on the bundled digits data (`make demo`).

    msdnet-demo --workdir runs/digits_demo

Stages: train (the ``digits`` config, resumable), evaluate (into ``<run>/eval/model``),
visualize (Grad-CAM grid, per-class attention, training animation and the index page), export
(SavedModel with a real early exit at budget level p = 5, where the digits model keeps the last
exit's accuracy at about a third of its FLOPs; ``.keras``; TFLite; each checked against the
evaluation on the test split).
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: C++ INFO lines

from absl import app, flags, logging
from ml_collections import config_flags

from msdnet_tf.cli import program

__all__ = ["main"]

_WORKDIR = flags.DEFINE_string("workdir", "runs/digits_demo", "Where the run folder goes.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", program.config_path("digits"), "A shipped config's name or a file."
)


def stage_train_and_evaluate(config, workdir):
    from msdnet_tf.training import train_and_evaluate

    summary = train_and_evaluate(config, workdir, progress=program.progress())
    print("\nPer-exit test accuracy:")
    for record in summary["per_exit"]:
        print(f"  {record['name']}: top-1 {100 * record['top1']:.2f}%  "
              f"({record['mflops']:.2f} MFLOPs)")  # fmt: skip
    where = {
        "final model": ["model.keras"],
        "best model (validation)": ["best.keras"],
        "training log": ["log.csv", "tensorboard/"],
        "per exit and class": ["eval/model/per_exit.csv", "eval/model/per_class.csv",
                               "eval/model/per_class.png"],
        "difficulty": ["eval/model/difficulty.csv", "eval/model/difficulty_hist.png"],
        "anytime and budgeted": ["eval/model/anytime.png", "eval/model/budgeted.json",
                                 "eval/model/budgeted.png"],
        "probabilities, summary": ["eval/model/probabilities.npz", "eval/model/results.json"],
    }  # fmt: skip
    for what, files in where.items():
        print(f"  {what:>24}: " + ", ".join(os.path.join(workdir, f) for f in files))
    return summary


def stage_visualize(config, workdir):
    from msdnet_tf.visualize import visualize_run

    del config
    # The block features each head reads (8x8 on digits) rather than the heads' last convs (2x2).
    pages = visualize_run(workdir, layer="features", progress=program.progress())
    print(f"Grad-CAM grid: {pages['grid']}\nPer-class view: {pages['class']}")
    print(f"Training animations: {len(pages['animations'])} GIFs\nBrowse: {pages['index']}")


EXPORT_P = 5  # budget level of the exported early exit (q = p / 20)


def stage_export(config, workdir):
    from msdnet_tf.serving.export_check import export_run

    del config
    check = export_run(workdir, p=EXPORT_P, tflite=True, progress=program.progress())
    early, timing = check["early_exit"], check["timing"]
    same = "equal to" if early["equals_simulated_evaluation"] else "DIFFERENT FROM"
    print(f"SavedModel: {check['paths']['saved_model']} (serving_default, early_exit, "
          f"early_exit_default)")  # fmt: skip
    print(
        f"Early exit at p = {EXPORT_P}: top-1 {100 * early['accuracy']:.2f}%, exits "
        f"{early['exit_counts']}, {early['expected_mflops']:.2f} of "
        f"{early['full_model_mflops']:.2f} MFLOPs; decisions {same} the simulated evaluation"
    )
    print(
        f"Wall clock on the test split: {timing['measured_speedup']:.2f}x the throughput of "
        f"computing every exit (FLOPs predict {timing['flops_predicted_speedup']:.2f}x)"
    )
    lite = check["tflite"]
    print(
        f"TFLite last-exit top-1 {100 * lite['top1'][-1]:.2f}% (Keras "
        f"{100 * lite['keras_top1'][-1]:.2f}%), max |dprob| {lite['max_abs_diff']:.1e}"
    )
    lite_early = lite["early_exit"]
    same = "equal to" if lite_early["equals_simulated_evaluation"] else "DIFFERENT FROM"
    print(
        f"TFLite early exit (tflite_segments/): exits {lite_early['exit_counts']}, decisions "
        f"{same} the simulated evaluation; {lite_early['measured_speedup']:.2f}x the full TFLite "
        f"model's throughput (FLOPs predict {lite_early['flops_predicted_speedup']:.2f}x)"
    )
    one = lite_early.get("single_images_equal_simulated_evaluation")
    if one is not None:
        print(
            "TFLite single-image graph (single_image.tflite, exits as IF ops): decisions "
            f"{'equal to' if one else 'DIFFERENT FROM'} the simulated evaluation"
        )


STAGES = [
    ("train + evaluate", stage_train_and_evaluate),
    ("visualize", stage_visualize),
    ("export", stage_export),
]


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    program.check_writable(_WORKDIR.value, "--workdir")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines would bury the results
    config, workdir = _CONFIG.value, _WORKDIR.value
    start = time.time()
    for name, stage in STAGES:
        t = time.time()
        print(f"== {name}")
        stage(config, workdir)
        print(f"== {name}: {time.time() - t:.0f}s")
    print(f"\nDone in {time.time() - start:.0f}s. Everything is in {workdir}/")


def main():
    program.run(_main, "msdnet-demo")


if __name__ == "__main__":
    main()
