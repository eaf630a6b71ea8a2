"""The local benchmark: ``python -m bench`` (``make bench``), a tool beside the runtime.

Measures, in one run on one machine, (a) the raw model loop on preloaded tensors (the
limit), (b) a plain KServe predictor written the documented way (the baseline) and
(c) this project's predictor over V1 JSON, V2 binary REST and gRPC, then prints a
table with the ratios (c)/(a) and (c)/(b). See ``run.py`` for the flags.
"""
