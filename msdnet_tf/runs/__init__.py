"""Run folders: one object per run and checkpoint, and the identity every result records."""

from msdnet_tf.runs.identity import CheckpointIdentity, weights_sha256
from msdnet_tf.runs.run import (
    CHECKPOINTS,
    EVAL_DIR,
    EVAL_RECORD,
    Evaluation,
    Run,
    StaleEvaluationError,
)

__all__ = [
    "CHECKPOINTS",
    "EVAL_DIR",
    "EVAL_RECORD",
    "CheckpointIdentity",
    "Evaluation",
    "Run",
    "StaleEvaluationError",
    "weights_sha256",
]
