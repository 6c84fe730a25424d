"""The test command's own promise: with the distribution options scripts/test.sh gives
pytest-xdist, the tests of one module run on one worker, so a module-scoped fixture (a built
book, a graded class) is built once. Under pytest 9, xdist's `loadgroup` silently split such
modules and built each fixture on both workers; this test fails with it."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''
import os, time
import pytest

@pytest.fixture(scope="module")
def built():
    with open(os.environ["BUILT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")

@pytest.mark.parametrize("i", range(6))
def test_uses_it(built, i):
    time.sleep(0.2)

@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.2)
'''


def distribution_options():
    """The xdist options of the pytest command in scripts/test.sh."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    options = re.findall(r"--dist \w+|--no-loadscope-reorder", script)
    assert any(o.startswith("--dist") for o in options), "scripts/test.sh sets no --dist"
    return [part for option in options for part in option.split()]


def test_a_module_fixture_is_built_once_on_two_workers(tmp_path):
    (tmp_path / "test_shared.py").write_text(MODULE)
    (tmp_path / "test_other.py").write_text(MODULE.replace("built()", "built_too()")
                                            .replace("(built,", "(built_too,"))
    log = tmp_path / "built.log"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", *distribution_options(), "-q",
         "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "BUILT_LOG": str(log)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "24 passed" in run.stdout
    builds = log.read_text().split()
    assert len(builds) == 2, f"each module's fixture must be built once, got {len(builds)} builds"
