"""The course's exercises: one record (`record.Exercise`) per exercise, one module per chapter.

Everything the course knows about an exercise sits in its chapter's module, next to its record:
the visible cases and the inputs they are built from, the reference (the package's own
implementation), the known mistakes a wrong answer is matched against, and the package functions
switched off while `check()` runs an answer. The hidden cases are the one exception: they live in
the instructor's `instructor/hidden_cases.py`, never released, and the record's `hidden` names the
function there that returns them.

`EXERCISES` below is the one table of them, in course order; checks.py judges answers against it.
To add an exercise, write its record in its chapter's module and list it here.
"""

from . import (ch01_dataset, ch02_architecture, ch03_loss, ch04_training, ch05_evaluation,
               ch06_testing_explanations, ch07_harder_world, ch08_shortcuts)
from .record import Case, Exercise

_COURSE = [
    ch01_dataset.FINDING_MASKS,
    ch02_architecture.CROSS_ATTENTION,
    ch02_architecture.CAUSAL_ATTENTION_WEIGHTS,
    ch03_loss.SHIFTED_CROSS_ENTROPY,
    ch03_loss.GROUNDING_LOSS,
    ch03_loss.ATTENTION_ENTROPY,
    ch03_loss.COMPUTE_LOSS,
    ch04_training.CACHED_ATTENTION_STEP,
    ch05_evaluation.POINTING_GAME_AND_MASS,
    ch06_testing_explanations.PATCH_NORM_MAP,
    ch06_testing_explanations.RANK_CORRELATION,
    ch06_testing_explanations.DELETION_CURVE,
    ch06_testing_explanations.GRADIENT_TIMES_INPUT,
    ch07_harder_world.SPATIAL_PRECISION,
    ch08_shortcuts.ATTENTION_ON_MARK,
]

EXERCISES = {exercise.id: exercise for exercise in _COURSE}     # exercise id -> its record
assert len(EXERCISES) == len(_COURSE), "two exercises with the same id"

__all__ = ["EXERCISES", "Case", "Exercise"]
