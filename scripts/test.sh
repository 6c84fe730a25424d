#!/usr/bin/env bash
# Set up, then run every test in one pytest run: the package's unit tests, the grader, and nbval
# over the chapters.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
# pytest-xdist, one worker per core (TEST_WORKERS=0 runs serially). `--dist loadscope` sends each
# test module and each notebook to one worker: a module-scoped fixture (a built book, a graded
# class) is built once, and a notebook's cells share one kernel, as nbval needs. (xdist's
# `loadgroup` would be finer, but pytest 9 ignores its groups; tests/test_test_suite.py checks
# what loadscope does.) `--no-loadscope-reorder` keeps the order given: the chapters first, so the
# longest runs start at once and the short tests fill the gaps at the end.
workers="${TEST_WORKERS:-auto}"
python -m pytest -n "$workers" --dist loadscope --no-loadscope-reorder \
    --durations=15 \
    --nbval notebooks/ tests/ --nbval-sanitize-with notebooks/nbval_sanitize.cfg
