import json
import subprocess
import sys


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "medsight_lab", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_then_evaluate(tmp_path):
    ckpt = tmp_path / "m.pt"
    r = run("train", "--out", str(ckpt), "--samples", "200", "--epochs", "2", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("evaluate", str(ckpt), "--samples", "20", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n_samples"] == 20 and 0 <= metrics["exact_match"] <= 1
    table = run("evaluate", str(ckpt), "--samples", "20", cwd=tmp_path)
    assert "pointing_game" in table.stdout and "chance" in table.stdout


def test_evaluate_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("not a model")
    r = run("evaluate", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "not a MedSight Lab checkpoint" in r.stderr
    assert "Traceback" not in r.stderr


def test_release_refuses_a_repository_the_book_cannot_link(tmp_path):
    from pathlib import Path
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    r = run("release", "--source", str(notebooks), "--out", str(tmp_path / "student"),
            "--no-html", "--repository-url", "https://example.org/course", cwd=tmp_path)
    assert r.returncode == 2 and "GitHub, GitLab or Bitbucket" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "student").exists()
