"""Chapter 6 graded end to end: a submission with two right and two wrong answers, and the
instructor's own, graded by the grading plugin in its sandbox, where the score functions of
deletion_curve and gradient_times_input arrive as data (runner.PatchScore) and the chapter itself
never runs."""

import csv

import nbformat

from test_grading_plugin import CHAPTERS, grade_folder, with_answers

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


CHAPTER = CHAPTERS / "06_testing_explanations.ipynb"
EXERCISES_6 = {"patch_norm_map": 1, "rank_correlation": 2, "deletion_curve": 2,
               "gradient_times_input": 2}


def test_a_chapter_6_submission_earns_the_marks_of_its_right_answers_only(tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(with_answers(CHAPTER, {
        "patch_norm_map": RIGHT_NORM_MAP, "rank_correlation": PEARSON,
        "deletion_curve": FROM_ONE, "gradient_times_input": RIGHT_GRADIENT}),
        submissions / "bob_06.ipynb")
    nbformat.write(nbformat.read(CHAPTER, as_version=4), submissions / "reference_06.ipynb")
    out = tmp_path / "grades"
    run = grade_folder(submissions, out)
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        grades = {(r["submission"], r["exercise"]): r for r in csv.DictReader(f)}
    assert set(grades) == {(s, e) for s in ("bob_06.ipynb", "reference_06.ipynb")
                           for e in EXERCISES_6}, run.stdout[-2000:]
    for exercise, points in EXERCISES_6.items():             # the instructor's answers, in full
        verdict = grades[("reference_06.ipynb", exercise)]["verdict"]
        assert grades[("reference_06.ipynb", exercise)]["points"] == str(points), verdict
        assert f"✔ {exercise} (hidden tests): correct on " in verdict
    rows = {e: r for (s, e), r in grades.items() if s == "bob_06.ipynb"}
    points = {e: (r["points"], r["max_points"]) for e, r in rows.items()}
    assert points == {"patch_norm_map": ("1", "1"), "rank_correlation": ("0", "2"),
                      "deletion_curve": ("0", "2"), "gradient_times_input": ("2", "2")}, rows
    assert "Spearman's correlates their *ranks*" in rows["rank_correlation"]["verdict"]
    assert "starts at k = 1" in rows["deletion_curve"]["verdict"]
    for exercise, cases in (("patch_norm_map", 4), ("gradient_times_input", 4)):
        assert f"✔ {exercise} (hidden tests): correct on {cases} cases." in \
            rows[exercise]["verdict"]
