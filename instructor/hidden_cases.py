"""The hidden cases of every exercise: instructor only.

This file lives outside the `medsight_lab` package, so that neither the student edition (release
copies the package, never this folder; its leak scan searches the whole edition for these lines)
nor the grading sandbox (which mounts no repository) holds it. Two readers load it, both trusted:
`check(exercise_id, fn, suite="hidden")` in the instructor notebooks (also under nbgrader on the
instructor's machine), and the grader, which computes the expected values itself.

One function per exercise, `_hidden_<exercise id>()`, returning its `Case`s: the exercise's record
(medsight_lab/grading/exercises/) names it in its `hidden` field. The inputs are built with the
same functions as the visible cases, from the record's chapter module. Cases say what situation
they test in their label (it completes "wrong value on ..."); `grad=True` also compares gradients
with the reference's.
"""

from medsight_lab.grading.exercises import Case
from medsight_lab.grading.exercises.ch01_dataset import _mask_inputs
from medsight_lab.grading.exercises.ch02_architecture import _attention_inputs, _scores
from medsight_lab.grading.exercises.ch03_loss import (_ce_inputs, _entropy_inputs,
                                                      _grounding_inputs, _loss_inputs)
from medsight_lab.grading.exercises.ch04_training import _cache_inputs
from medsight_lab.grading.exercises.ch05_evaluation import _grounding_rows
from medsight_lab.grading.exercises.ch06_testing_explanations import (_deletion_inputs,
                                                                      _explanation_patches,
                                                                      _gradient_inputs,
                                                                      _rank_pairs)
from medsight_lab.grading.exercises.ch07_harder_world import _sentence_rows, _threshold_case
from medsight_lab.grading.exercises.ch08_shortcuts import _mark_inputs


def _hidden_finding_masks():
    return [Case("fresh random reports", _mask_inputs(10, B=8, T=12, N=9, G=7, V=30)),
            Case("the course's reports", _mask_inputs(11, B=12, T=20, reports=True)),
            Case("a single image (B=1)", _mask_inputs(12, B=1, normal_rows=())),
            Case("no grounded words", _mask_inputs(13, G=0)),
            Case("every word grounded", _mask_inputs(14, V=8, G=5)),
            Case("more patches than tokens (N > T)", _mask_inputs(15, T=5, N=25))]


def _hidden_cross_attention():
    return [Case("fresh random inputs", (*_attention_inputs(10, B=3, T=7, N=16, D=12), 3),
                 grad=True),
            Case("fresh random inputs", (*_attention_inputs(11, D=16), 4), grad=True),
            Case("a single head (H=1)", (*_attention_inputs(12), 1)),
            Case("a single image (B=1) and two tokens (T=2)",
                 (*_attention_inputs(13, B=1, T=2), 2)),
            Case("a different number of patches (N=9)", (*_attention_inputs(14, N=9), 2))]


def _hidden_causal_attention_weights():
    return [Case("fresh random scores", (_scores(10, 3, 2, 7, 7),), grad=True),
            Case("fresh random scores", (_scores(11, 2, 9, 9),), grad=True),
            Case("two positions (T=2)", (_scores(12, 2, 2, 2),)),
            Case("a single position (T=1)", (_scores(13, 2, 1, 1),)),
            Case("scores with large values", (_scores(14, 4, 6, 6) * 20,))]


def _hidden_shifted_cross_entropy():
    return [Case("fresh random inputs", _ce_inputs(10, B=4, T=12, V=36), grad=True),
            Case("fresh random inputs", _ce_inputs(11), grad=True),
            Case("a batch with a report that is all <pad>", _ce_inputs(12, all_pad_row=True)),
            Case("reports of two tokens (T=2)", _ce_inputs(13, T=2, padding=False)),
            Case("a batch padded with pad_id=4", _ce_inputs(14, pad_id=4), {"pad_id": 4}),
            Case("a single report with padding (B=1)", _ce_inputs(15, B=1, T=6)),
            Case("a long batch with padding", _ce_inputs(16, B=2, T=20, V=36))]


def _hidden_grounding_loss():
    return [Case("fresh random inputs", _grounding_inputs(10, B=4, T=12, H=4, N=16), grad=True),
            Case("fresh random inputs", _grounding_inputs(11), grad=True),
            Case("a batch in which no image has a finding", _grounding_inputs(12, findings=False)),
            Case("a single head (H=1)", _grounding_inputs(13, H=1)),
            Case("a single layer", _grounding_inputs(14, layers=1)),
            Case("a different number of patches (N=9)", _grounding_inputs(15, N=9)),
            Case("a single image with a finding (B=1)", _grounding_inputs(16, B=1, T=4)),
            Case("attention weights of exactly 0 and 1 on a finding row",
                 _grounding_inputs(17, saturated_finding_row=True))]


def _hidden_attention_entropy():
    return [Case("fresh random inputs", _entropy_inputs(10, B=4, T=12, H=4, N=16), grad=True),
            Case("fresh random inputs", _entropy_inputs(11), grad=True),
            Case("attention rows with weights exactly 0", _entropy_inputs(12, one_hot_row=True)),
            Case("a single head (H=1)", _entropy_inputs(13, H=1)),
            Case("a single layer", _entropy_inputs(14, layers=1)),
            Case("two positions (T=2)", _entropy_inputs(15, T=2))]


def _hidden_cached_attention_step():
    return [Case("fresh random inputs", _cache_inputs(10, B=3, H=4, S=6, d_k=16), grad=True),
            Case("two new positions on a cache of 3", _cache_inputs(11, S=3, T=2), grad=True),
            Case("a single image and head (B=1, H=1)", _cache_inputs(12, B=1, H=1, S=7)),
            Case("four new positions on an empty cache (S=0)", _cache_inputs(13, S=0, T=4)),
            Case("a long cache (S=19)", _cache_inputs(14, S=19)),
            Case("queries with large values", tuple(t * (8 if i == 0 else 1) for i, t in
                                                    enumerate(_cache_inputs(15, S=5))))]


def _hidden_pointing_game_and_mass():
    # square (as many rows as patches), like the first visible case
    return [Case("fresh random rows", _grounding_rows(10, M=16)),
            Case("a single row (M=1)", _grounding_rows(11, M=1)),
            Case("rows with all weight on one patch", _grounding_rows(12, one_hot=True)),
            Case("nearly uniform rows", _grounding_rows(13, sharp=0.05)),
            Case("lesions of one patch", _grounding_rows(14, sizes=(1,)))]


def _hidden_compute_loss():
    return [Case("fresh random inputs", _loss_inputs(10, B=4, T=12, V=36, H=4, N=16), grad=True),
            Case("fresh random inputs with lambda_ground=1, lambda_entropy=0.5",
                 _loss_inputs(11), {"lambda_ground": 1.0, "lambda_entropy": 0.5}, grad=True),
            Case("a batch in which no image has a finding", _loss_inputs(12, findings=False)),
            Case("a batch with a report that is all <pad>", _loss_inputs(13, all_pad_row=True)),
            Case("a single report (B=1)", _loss_inputs(14, B=1)),
            Case("a single head and a single layer", _loss_inputs(15, H=1, layers=1)),
            Case("reports of two tokens (T=2)", _loss_inputs(16, T=2)),
            Case("lambdas of zero", _loss_inputs(17), {"lambda_ground": 0.0,
                                                       "lambda_entropy": 0.0})]


def _hidden_patch_norm_map():
    one_hot_like = _explanation_patches(13, B=2, N=5, D=3, bright=1) * 20
    return [Case("fresh random patches", (_explanation_patches(10, B=5, N=16, D=64),), grad=True),
            Case("a single image (B=1)", (_explanation_patches(11, B=1),)),
            Case("patches of one feature (D=1)", (_explanation_patches(12, D=1),)),
            Case("one very long patch per image", (one_hot_like,))]


def _hidden_rank_correlation():
    return [Case("fresh random rows", _rank_pairs(10, B=8, N=16)),
            Case("rows in reverse order", _rank_pairs(11, relation="reversed")),
            Case("unrelated rows", _rank_pairs(12, B=6, relation="unrelated")),
            Case("a single row (B=1)", _rank_pairs(13, B=1)),
            Case("rows of two values (N=2)", _rank_pairs(14, B=4, N=2))]


def _hidden_deletion_curve():
    score, patches, ranking, background = _deletion_inputs(13, B=3, N=7)
    return [Case("fresh random inputs", _deletion_inputs(10, B=5, N=16, D=8)),
            Case("a single image (B=1)", _deletion_inputs(11, B=1)),
            Case("images of two patches (N=2)", _deletion_inputs(12, B=3, N=2)),
            Case("a ranking on another scale (negative values)",
                 (score, patches, ranking * 50 - 100, background))]


def _hidden_gradient_times_input():
    return [Case("fresh random inputs", _gradient_inputs(10, B=5, N=16, D=8)),
            Case("a single image (B=1)", _gradient_inputs(11, B=1)),
            Case("patches of one feature (D=1)", _gradient_inputs(12, D=1)),
            Case("a score that reads only the first patch", _gradient_inputs(13, reads=1))]


def _hidden_spatial_precision():
    # Chapter 7: mixed word order, the exact threshold, another threshold, one word, an 8 x 8
    # grid, several hallucinated sentences.
    return [Case("fresh random sentences", _sentence_rows(10, S=12, distinct=True)),
            Case("words of the sentences in mixed order", _sentence_rows(11, S=5, shuffle=True)),
            Case("a sentence whose mean mass is exactly the threshold", _threshold_case()),
            Case("threshold=0.8", _sentence_rows(12, S=6, threshold=0.8), {"threshold": 0.8}),
            Case("one sentence of one word", _sentence_rows(13, S=1, words=(1,))),
            Case("an 8 x 8 patch grid", _sentence_rows(14, S=5, N=64)),
            Case("several hallucinated sentences", _sentence_rows(15, S=6, hallucinated=3))]


def _hidden_attention_on_mark():
    return [Case("fresh random reports", _mark_inputs(10, B=8, T=12, N=16), grad=True),
            Case("a single report (B=1)", _mark_inputs(11, B=1)),
            Case("a finding word in the last row", _mark_inputs(12, B=4, last_row=True)),
            Case("images without a mark", _mark_inputs(13, B=5, unmarked=2)),
            Case("an 8 x 8 patch grid and a mark of one patch",
                 _mark_inputs(14, B=4, T=10, N=64, mark_size=(1,))),
            Case("marks of four patches", _mark_inputs(15, B=4, mark_size=(4,)))]
