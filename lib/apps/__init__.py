"""Applications over the engine: the reproduction pipeline, run reports and drawings.

The top library layer: it may use everything below (utils, config, core, eval, models, datasets,
engine); nothing below imports it. The commands in ``run/`` and ``benchmarks/`` sit above it.
"""
