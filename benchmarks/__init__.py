"""Scripts that print figures (speed, memory, the claim on the miniature); shared parts in common.py."""
