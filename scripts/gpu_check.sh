#!/usr/bin/env bash
# The GPU check of the course, prepared for a machine that has a CUDA GPU and PyTorch but no
# network and none of the Jupyter packages (the lent device machine of this workplace; also any
# GPU box where you would rather not touch the Python environment).
#
#   bash scripts/gpu_check.sh fetch [PYTHON_VERSION]   # here, with a network: wheels into .whl/
#   bash scripts/gpu_check.sh run                      # there: install them aside, run the tests
#
# `fetch` downloads, without their dependencies, the wheels of the packages nbval needs to run
# the notebooks (pinned to the versions in this checkout's .venv when it has one) for
# PYTHON_VERSION (default 3.12, the device's). `run` installs them into /tmp/site (nothing is
# changed in the machine's own environment), then runs, on whatever device ml.pick_device()
# finds, the package tests that train and generate (CUDA code paths) and the whole nbval suite
# against the outputs stored on the CPU. Logs go to $OUT when it is set (the device tool), else
# to _build/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(nbval nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py
          jupyter_core platformdirs traitlets jupyter_client pyzmq tornado ipykernel comm debugpy
          ipython ipython_pygments_lexers matplotlib-inline jedi parso pexpect ptyprocess
          prompt_toolkit wcwidth stack-data asttokens executing pure_eval ipywidgets
          widgetsnbextension jupyterlab_widgets attrs nest-asyncio2 psutil coverage)
# Package tests whose code runs on the device ml.pick_device() picks (training, generation,
# evaluation, sanity checks, the explorer's data); the others are CPU-only by design.
DEVICE_TESTS=(tests/test_model.py tests/test_generation.py tests/test_training.py
              tests/test_metrics.py tests/test_sanity.py tests/test_explorer.py)

fetch() {
    local version=${1:-3.12} specs=() name pinned
    for name in "${PACKAGES[@]}"; do
        pinned=""
        if [[ -x .venv/bin/python ]]; then
            pinned=$(.venv/bin/python -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name")
        fi
        specs+=("$name${pinned:+==$pinned}")
    done
    rm -rf .whl && mkdir .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${specs[@]}"
    du -sh .whl
}

run() {
    local out=${OUT:-_build/gpu_check} site=/tmp/medsight-site status=0
    mkdir -p "$out"
    [[ -d .whl ]] || { echo "no .whl/ folder: run 'bash scripts/gpu_check.sh fetch' first" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
    # The kernels nbval starts inherit PYTHONPATH, so they import the same packages and the course.
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export PATH="$site/bin:$PATH"
    python3 - <<'EOF' 2>&1 | tee "$out/device.txt"
import platform, torch
import medsight_lab as ml
print("python", platform.python_version(), "| torch", torch.__version__,
      "| device picked:", ml.pick_device(),
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
EOF
    python3 -m pytest -q -p no:cacheprovider "${DEVICE_TESTS[@]}" 2>&1 | tee "$out/package_tests.txt" \
        || status=1
    python3 -m pytest -q -p no:cacheprovider --nbval notebooks/ \
        --nbval-sanitize-with notebooks/nbval_sanitize.cfg 2>&1 | tee "$out/nbval.txt" || status=1
    echo "gpu_check: $([[ $status == 0 ]] && echo passed || echo FAILED)" | tee -a "$out/device.txt"
    return $status
}

case "${1:-}" in
    fetch) shift; fetch "$@" ;;
    run) run ;;
    *) sed -n 2,16p "$0"; exit 2 ;;
esac
