#!/usr/bin/env bash
# Set up LLM Training Lab in ./.venv: torch (CPU build where no GPU is present), labkit and its
# dependencies, and a Jupyter kernel inside the venv so `jupyter lab` opens the notebooks and runs them.
#   ./setup.sh          # the lab
#   ./setup.sh --dev    # plus test tools (pytest, playwright, tensorboard for the tracking tests)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# pip compiles each installed file to bytecode one at a time; compileall at the end does it on every core instead
# (benchmarks/suite_timing.py times the setup). The bytecode matters: where PYTHONDONTWRITEBYTECODE is set, what is
# not compiled here is never cached, and every process would compile torch and transformers again on import.
pip_install() { python -m pip install -q --no-compile "$@"; }
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    pip_install torch                      # a GPU is present: pip's default (CUDA) build
  else
    # No GPU: the CPU build. 2.13.0 is served from local disk on the lab's machines; elsewhere the
    # PyTorch CPU index has it. A bare `torch` would pull a multi-GB CUDA build for nothing.
    pip_install torch==2.13.0 2>/dev/null || pip_install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if [ "${1:-}" = "--dev" ]; then extra="[dev]"; else extra=""; fi
pip_install -e ".${extra}"
if [ "${1:-}" = "--dev" ]; then
  # The real-browser test drives Debian's chromium through playwright; without them it is skipped.
  tests/browser_setup.sh .venv/bin/python || echo "note: chromium/playwright unavailable: the browser test will be skipped"
fi
# Skipped: the dependencies' own test suites and transformers' model families the lab never builds (a third of the
# bytes; 27 -> 17 s on 2 cores). A file skipped here still works: it compiles when, if ever, it is imported.
python -m compileall -q -j 0 -x '/tests?/|/torch/testing/_internal/|/transformers/models/(?!(auto|llama|bert|t5|gpt2|mistral|bloom|encoder_decoder)/)' \
  "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
# A kernelspec inside the venv: `jupyter lab` from .venv finds it, papermill's "python3" resolves to it.
python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (labkit)" >/dev/null
echo "labkit is set up in .venv (torch $(python -c 'import torch; print(torch.__version__)'))"
