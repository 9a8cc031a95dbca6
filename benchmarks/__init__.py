"""Scripts that print figures (speed, memory, the claim on the miniature); shared parts in common.py,
the original's slow reference code (timed here, compared against in the tests) in reference.py."""
