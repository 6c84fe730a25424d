# Sourced by book.sh and test.sh: make (or reuse) .venv with everything in requirements.txt.
# Set MEDSIGHT_VENV to use another folder; an already active virtualenv is used as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    venv="${MEDSIGHT_VENV:-.venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
fi
if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        pip install "torch>=2.4,<3"            # CUDA build for the GPU
    else
        # CPU-only machine: a CPU build. Here it is a wheel on disk; elsewhere point pip at
        # PyTorch's CPU index (PIP_EXTRA_INDEX_URL) or set TORCH_SPEC.
        pip install "${TORCH_SPEC:-torch==2.13.0}"
    fi
fi
pip install -q -r requirements.txt
python -m ipykernel install --sys-prefix --name python3 >/dev/null
