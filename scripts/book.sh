#!/usr/bin/env bash
# Set up, then build the instructor book (_build/html) and the student edition (_build/student).
set -euo pipefail
. "$(dirname "$0")/setup.sh"
jupyter-book build . -W -n --keep-going
python -m medsight_lab release
