"""What an exercise is: one record (`Exercise`) holding everything the course knows about it, its
test cases (`Case`), and the one comparison that the judge (checks.py) and the known mistakes
share (`matches`, within ATOL and RTOL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

ATOL, RTOL = 1e-5, 1e-4


@dataclass
class Case:
    label: str             # completes "wrong value on ...": says which situation failed
    args: tuple
    kwargs: dict = field(default_factory=dict)
    grad: bool = False     # also compare gradients with the reference's (hidden suite)


@dataclass(frozen=True, eq=False)     # one record per exercise: equal only to itself
class Exercise:
    """One exercise, whole. Its hidden cases are not here: they live in the instructor's tree
    (checks.HIDDEN_CASES_FILE, never released), and `hidden` names the function there that
    returns them."""
    id: str                 # the function the student writes; the grade_id of its answer cell
    chapter: str            # the chapter notebook's stem, e.g. "03_loss"
    title: str              # what the chapter calls the exercise
    points: int
    cases: Callable[[], list]   # the visible cases
    hidden: str             # the function of the hidden-cases file that returns the hidden cases
    reference: Callable     # the package's implementation, as a function of a case's inputs
    guarded: tuple          # (module, name) of the package functions switched off while check()
                            # runs an answer in the student's kernel
    outputs: tuple          # names of the returned values
    shapes: tuple           # how each returned shape is spelt in a message
    inputs: tuple           # the arguments' names, for messages
    grad_args: tuple        # indices of the arguments whose gradients are compared
    mistakes: list | tuple = ()     # known mistakes: (the verdict in words, a function of the
                                    # same inputs), the first that matches is named
    diagnose: Callable | None = None    # instead of `mistakes`: (out, expected, args, kwargs) ->
                                        # a known mistake's message, or None

    @property
    def function(self):
        """The name of the function the chapter asks the student to write (the exercise id)."""
        return self.id

    def known_mistake(self, out, expected, args, kwargs):
        """The message of the known mistake that `out` matches, else None."""
        if self.diagnose is not None:
            return self.diagnose(out, expected, args, kwargs)
        return first_mistake(self.mistakes, out, expected, args, kwargs)


def first_mistake(mistakes, out, reference, args, kwargs=None):
    """The message of the first known mistake whose output `out` matches, else None."""
    for message, wrong in mistakes:
        try:
            if matches(out, wrong(*args, **(kwargs or {})), reference):
                return message
        except Exception:  # a mistake that cannot be computed on these inputs is not the one
            continue
    return None


def matches(out, expected, reference=None):
    """`out` equals `expected` within the tolerance. With the `reference` output (when `expected`
    is a known mistake), an output whose shape the mistake changes is left out when the student's
    shape differs from it too: a single head shows in the context whatever shape of weights the
    student returns."""
    if isinstance(expected, tuple):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return False
        pairs = [(o, e) for o, e, r in zip(out, expected, reference or expected)
                 if same_shape(o, e) or same_shape(e, r)]
        return bool(pairs) and all(matches(o, e) for o, e in pairs)
    if not same_shape(out, expected):
        return False
    return torch.allclose(out.detach().double().reshape(expected.shape),
                          expected.detach().double(), atol=ATOL, rtol=RTOL, equal_nan=True)


def same_shape(out, expected):
    """Shapes agree; a one-element tensor stands for a 0-dim scalar."""
    return isinstance(out, torch.Tensor) and (
        out.shape == expected.shape or (expected.dim() == 0 and out.numel() == 1))
