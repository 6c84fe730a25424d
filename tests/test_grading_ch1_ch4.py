"""The exercises of chapters 1 (finding_masks) and 4 (greedy_decode) graded end to end: one
grading run over a right and a wrong submission of each chapter. Chapter 4 trains its three
models as it is graded (twice here: the slowest test of the grader, about 1.5 min of CPU)."""

import csv
import subprocess
import sys

import nbformat
import pytest

from test_grading_plugin import CHAPTERS, ROOT, with_answers

DATASET, TRAINING = CHAPTERS / "01_dataset.ipynb", CHAPTERS / "04_training.ipynb"

WRONG_MASKS = (  # the reference notebook's rule: every word grounded
    "def finding_masks(token_ids, lesion_mask, grounded_ids):\n"
    "    grounded = (token_ids > 2).float()\n"
    "    return grounded[:, :, None] * lesion_mask[:, None, :]")
WRONG_DECODE = (  # keeps writing after <eos>
    "def greedy_decode(model, image_patches, max_len):\n"
    "    cfg = model.config\n"
    "    tokens = torch.full((image_patches.shape[0], max_len), cfg.pad_id)\n"
    "    tokens[:, 0] = cfg.bos_id\n"
    "    with torch.no_grad():\n"
    "        image_kv = model.encode_image(image_patches)\n"
    "        caches = [[] for _ in range(cfg.num_layers)]\n"
    "        for t in range(max_len - 1):\n"
    "            logits, _ = model.decode(tokens[:, t:t + 1], image_kv, start=t, caches=caches)\n"
    "            tokens[:, t + 1] = logits[:, -1].argmax(-1)\n"
    "    return tokens")


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading_ch1_ch4")
    submissions = base / "submissions"
    submissions.mkdir()
    for path, name in ((DATASET, "right_01.ipynb"), (TRAINING, "right_04.ipynb")):
        nbformat.write(nbformat.read(path, as_version=4), submissions / name)
    nbformat.write(with_answers(DATASET, {"finding_masks": WRONG_MASKS}),
                   submissions / "wrong_01.ipynb")
    nbformat.write(with_answers(TRAINING, {"greedy_decode": WRONG_DECODE}),
                   submissions / "wrong_04.ipynb")
    out = base / "grades"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
         str(submissions), "--grade-output", str(out), "--grade-timeout", "300", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert (out / "gradebook.csv").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        return {(r["submission"], r["exercise"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("submission, exercise, points, words", [
    ("right_01.ipynb", "finding_masks", 2, "✔ finding_masks: correct on "),
    ("wrong_01.ipynb", "finding_masks", 0, "you ground every word of the report"),
    ("right_04.ipynb", "greedy_decode", 2, "✔ greedy_decode: correct on "),
    ("wrong_04.ipynb", "greedy_decode", 0, "a report goes on after its <eos>"),
])
def test_chapters_1_and_4_are_graded(grades, submission, exercise, points, words):
    row = grades[(submission, exercise)]
    assert int(row["points"]) == points and words in row["verdict"], row["verdict"]
    assert int(row["max_points"]) == 2
