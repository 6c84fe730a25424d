"""Chapter 6 graded end to end: one submission with two right and two wrong answers, graded inside
the whole chapter by the grading plugin (the chapter trains three small models as it runs)."""

import csv
import subprocess
import sys

import nbformat

from test_grading_plugin import CHAPTERS, ROOT, with_answers

RIGHT_NORM_MAP = ("def patch_norm_map(patches):\n"
                  "    return torch.softmax(torch.linalg.vector_norm(patches, dim=-1), dim=-1)")
RIGHT_GRADIENT = ("def gradient_times_input(score_fn, patches):\n"
                  "    x = patches.detach().clone().requires_grad_(True)\n"
                  "    score_fn(x).sum().backward()\n"
                  "    return (x.grad * x).sum(-1).detach()")
PEARSON = ("def rank_correlation(a, b):\n"            # the values, not their ranks
           "    a = a - a.mean(-1, keepdim=True)\n"
           "    b = b - b.mean(-1, keepdim=True)\n"
           "    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))")
FROM_ONE = ("def deletion_curve(score_fn, patches, ranking, background):\n"   # no k = 0
            "    rank = ranking.argsort(-1, descending=True).argsort(-1)\n"
            "    return torch.stack([score_fn(torch.where((rank < k)[..., None], background,\n"
            "                                             patches))\n"
            "                        for k in range(1, patches.shape[1] + 1)], -1)")


def test_a_chapter_6_submission_earns_the_marks_of_its_right_answers_only(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(with_answers(CHAPTERS / "06_testing_explanations.ipynb", {
        "patch_norm_map": RIGHT_NORM_MAP, "rank_correlation": PEARSON,
        "deletion_curve": FROM_ONE, "gradient_times_input": RIGHT_GRADIENT}),
        submissions / "bob_06.ipynb")
    out = tmp_path / "grades"
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin",
                          "--grade", str(submissions), "--grade-output", str(out), "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = {r["exercise"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"patch_norm_map", "rank_correlation", "deletion_curve",
                         "gradient_times_input"}, run.stdout[-2000:]
    points = {e: (r["points"], r["max_points"]) for e, r in rows.items()}
    assert points == {"patch_norm_map": ("1", "1"), "rank_correlation": ("0", "2"),
                      "deletion_curve": ("0", "2"), "gradient_times_input": ("2", "2")}, rows
    assert "Spearman's correlates their *ranks*" in rows["rank_correlation"]["verdict"]
    assert "starts at k = 1" in rows["deletion_curve"]["verdict"]
