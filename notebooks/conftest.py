"""`pytest --nbval-lax notebooks/` runs every notebook in order at the smoke preset, into runs/nbval/.

The notebooks read their run, folder and preset from these variables (their parameters cell); a kernel
inherits them from this process. Set LABKIT_PRESET yourself to run them at another size.
"""
import os

os.environ.setdefault("LABKIT_PRESET", "smoke")
os.environ.setdefault("LABKIT_RUN", "nbval")
os.environ.setdefault("LABKIT_THREADS", "2")
