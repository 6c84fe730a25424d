"""The exercises of chapters 1 (finding_masks) and 4 (cached_attention_step) graded end to end:
one grading run (the sandboxed grader, which never runs the chapters) over a right and a wrong
submission of each chapter."""

import csv

import nbformat
import pytest

from test_grading_plugin import CHAPTERS, grade_folder, with_answers

DATASET, TRAINING = CHAPTERS / "01_dataset.ipynb", CHAPTERS / "04_training.ipynb"

WRONG_MASKS = (  # every word grounded, not only the finding words
    "def finding_masks(token_ids, lesion_mask, grounded_ids):\n"
    "    grounded = (token_ids > 2).float()\n"
    "    return grounded[:, :, None] * lesion_mask[:, None, :]")
WRONG_STEP = (  # attends to the new key only
    "def cached_attention_step(q_new, k_cache, v_cache, k_new, v_new):\n"
    "    k = torch.cat([k_cache, k_new], dim=2)\n"
    "    v = torch.cat([v_cache, v_new], dim=2)\n"
    "    T = q_new.shape[2]\n"
    "    scores = q_new @ k_new.transpose(-2, -1) / q_new.shape[-1] ** 0.5\n"
    "    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -float('inf'))\n"
    "    return scores.softmax(-1) @ v_new, k, v")


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading_ch1_ch4")
    submissions = base / "submissions"
    submissions.mkdir()
    for path, name in ((DATASET, "right_01.ipynb"), (TRAINING, "right_04.ipynb")):
        nbformat.write(nbformat.read(path, as_version=4), submissions / name)
    nbformat.write(with_answers(DATASET, {"finding_masks": WRONG_MASKS}),
                   submissions / "wrong_01.ipynb")
    nbformat.write(with_answers(TRAINING, {"cached_attention_step": WRONG_STEP}),
                   submissions / "wrong_04.ipynb")
    out = base / "grades"
    run = grade_folder(submissions, out)
    assert (out / "gradebook.csv").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        return {(r["submission"], r["exercise"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("submission, exercise, points, words", [
    ("right_01.ipynb", "finding_masks", 2, "✔ finding_masks: correct on "),
    ("wrong_01.ipynb", "finding_masks", 0, "you ground every word of the report"),
    ("right_04.ipynb", "cached_attention_step", 2, "✔ cached_attention_step: correct on "),
    ("wrong_04.ipynb", "cached_attention_step", 0, "you attend only to the new key(s)"),
])
def test_chapters_1_and_4_are_graded(grades, submission, exercise, points, words):
    row = grades[(submission, exercise)]
    assert int(row["points"]) == points and words in row["verdict"], row["verdict"]
    assert int(row["max_points"]) == 2


def test_only_the_exercises_of_each_chapter_are_graded(grades):
    assert {e for (s, e) in grades if s.endswith("_01.ipynb")} == {"finding_masks"}
    assert {e for (s, e) in grades if s.endswith("_04.ipynb")} == {"cached_attention_step"}
