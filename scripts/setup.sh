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
        # CPU-only machine: PyTorch's CPU build. A CPU wheel that pip's own sources already hold
        # (find-links, as on our CI machines) is used as it is; otherwise pip would pick the
        # large CUDA build from PyPI, so the wheel comes from PyTorch's CPU index.
        local_spec="${TORCH_SPEC:-torch==2.13.0}"
        if pip install --dry-run --no-deps --no-index "$local_spec" >/dev/null 2>&1; then
            pip install "$local_spec"
        else
            pip install "${TORCH_SPEC:-torch>=2.4,<3}" \
                --index-url https://download.pytorch.org/whl/cpu \
                --extra-index-url https://pypi.org/simple
        fi
    fi
fi
pip install -q -r requirements.txt
python -m ipykernel install --sys-prefix --name python3 >/dev/null
