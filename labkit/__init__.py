"""LLM Training Lab: one module per stage (pretrain, sft, preferences, reward, ppo, compare, trust), the shared
modules they import, and the runner that executes the stages' notebooks (``labkit run``)."""
import sys

# nbformat and plotly's notebook renderer import jsonschema, whose format checkers import rfc3987-syntax when it is
# installed (nbformat's jsonschema[format-nongpl] installs it), and that module builds its Earley parsers at import
# time: over a second in every process that draws a figure or reads a notebook -- the runner, each stage's kernel,
# the report -- for the "iri" string format, which no notebook or Jupyter schema uses. Marked absent, jsonschema goes
# without an "iri" checker and nothing else changes (python-jsonschema/jsonschema#1428).
sys.modules.setdefault("rfc3987_syntax", None)
