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
        echo "setup: torch from PyPI (the CUDA build, for this machine's GPU)"
        pip install "torch>=2.4,<3"
    else
        # CPU-only machine: PyTorch's CPU build. A CPU wheel that pip's own sources already hold
        # (find-links, as on our CI machines) is used as it is; otherwise pip would pick the
        # large CUDA build from PyPI, so the wheel comes from PyTorch's CPU index. That index is
        # tried once with a short timeout (pip's default retries an unreachable host for minutes);
        # if it cannot be reached, PyPI's build is the fallback.
        local_spec="${TORCH_SPEC:-torch==2.13.0}"
        cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
        if pip install --dry-run --no-deps --no-index "$local_spec" >/dev/null 2>&1; then
            echo "setup: torch from pip's local sources (find-links): $local_spec"
            pip install "$local_spec"
        elif pip install "${TORCH_SPEC:-torch>=2.4,<3}" --timeout "${TORCH_INDEX_TIMEOUT:-15}" \
                --retries 0 --index-url "$cpu_index" --extra-index-url https://pypi.org/simple; then
            echo "setup: torch from PyTorch's CPU index ($cpu_index)"
        else
            echo "setup: PyTorch's CPU index ($cpu_index) could not be used; torch from PyPI" \
                 "instead (a larger build, with CUDA libraries this machine will not use)" >&2
            pip install "${TORCH_SPEC:-torch>=2.4,<3}"
            echo "setup: torch from PyPI"
        fi
    fi
fi
pip install -q -r requirements.txt
python -m ipykernel install --sys-prefix --name python3 >/dev/null
