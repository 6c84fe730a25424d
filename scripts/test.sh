#!/usr/bin/env bash
# Set up, then run every test: the package's unit tests, the grader, and nbval over the notebooks.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
# pytest-xdist: one worker per core (TEST_WORKERS=0 runs serially). The tests of a module that
# shares a module-scoped fixture stay on one worker (tests/conftest.py, --dist loadgroup); each
# notebook stays on one worker, since its cells share a kernel (--dist loadscope, as nbval says).
workers="${TEST_WORKERS:-auto}"
python -m pytest -n "$workers" --dist loadgroup --durations=15   # the slowest tests, to keep the run short
python -m pytest -n "$workers" --dist loadscope --nbval notebooks/ \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg
