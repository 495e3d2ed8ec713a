"""Repository-wide pytest setup.

nbval executes ``notebooks/*.ipynb`` as they are committed; their parameters
cell reads LABKIT_PRESET / LABKIT_RUNS_DIR / LABKIT_RUN from the environment,
so here they run on the ``smoke`` preset in a throw-away run folder, in order
01 -> 05 (each stage reads the previous one's run folder).
"""
import os
import tempfile

os.environ.setdefault("LABKIT_PRESET", "smoke")
os.environ.setdefault("LABKIT_RUN", "nbval")
os.environ.setdefault("LABKIT_RUNS_DIR", tempfile.mkdtemp(prefix="labkit-nbval-"))
os.environ.setdefault("LABKIT_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
