#!/usr/bin/env bash
# Install what tests/test_browser.py needs, only when it is missing:
# Debian's chromium (apt) and Python's playwright (pip). Never `playwright install`:
# it downloads browsers, and the test drives /usr/bin/chromium instead.
# Usage: tests/browser_setup.sh [python]
#   python: the interpreter that runs the tests (default: $PYTHON, else the repo's .venv, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:-${PYTHON:-}}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
  "$PY" -m pip install -q playwright
fi
echo "browser test ready: $(/usr/bin/chromium --version 2>/dev/null), playwright $("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
