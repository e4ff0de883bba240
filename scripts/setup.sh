#!/usr/bin/env bash
# Creates .venv and installs moai into it.
#   - GPU machine (nvidia-smi lists a GPU): torch from PyPI, which is the CUDA build.
#   - CPU machine: the CPU-only torch build (~200 MB instead of several GB of CUDA libraries),
#     from PyTorch's CPU index when reachable, else from pip's configured sources.
# Usage: bash scripts/setup.sh [--dev]      (--dev adds pytest, ruff, pexpect, sentencepiece, llama-cpp-python, go)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${MOAI_TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true

if python -c "import torch" 2>/dev/null; then
  echo "torch $(python -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU found: installing the CUDA build of torch ${TORCH_VERSION}"
  pip install -q "torch==${TORCH_VERSION}"
elif python - <<'PY' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
PY
then
  echo "no GPU: installing the CPU build of torch ${TORCH_VERSION}"
  pip install -q "torch==${TORCH_VERSION}+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
else
  echo "no GPU, PyTorch's CPU index unreachable: installing torch ${TORCH_VERSION} from pip's sources"
  pip install -q "torch==${TORCH_VERSION}"
fi
# --dev builds llama-cpp-python (llama.cpp, for the export tests) from source: use every core,
# and skip its multimodal library (moai exports text models; llama_cpp loads it only for images).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
pip install -q -e ".${extras}" 2>&1 | grep -v "is ignored" || true
# The export tests render Ollama Modelfile templates with Go's text/template (Debian's golang-go).
if [ -n "$extras" ] && ! command -v go >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing golang-go (Go's text/template for the Modelfile tests)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >/dev/null 2>&1; }; } \
      || echo "golang-go could not be installed: the Modelfile rendering tests will skip"
  else
    echo "go not found: the Modelfile rendering tests will skip (apt-get install golang-go)"
  fi
fi
python -c "import moai_llm, torch; print(f'moai ready (torch {torch.__version__}); activate with: . .venv/bin/activate')"
