#!/usr/bin/env bash
# Set up, then run every test: the package's unit tests, the grader, and nbval over the notebooks.
set -euo pipefail
. "$(dirname "$0")/setup.sh"
python -m pytest
python -m pytest --nbval notebooks/ --nbval-sanitize-with notebooks/nbval_sanitize.cfg
