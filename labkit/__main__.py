"""``python -m labkit …`` is the ``labkit`` command (for when the venv's bin/ is not on PATH)."""
import sys

from .runner import main

sys.exit(main())
