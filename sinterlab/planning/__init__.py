"""From measured samples to decisions over the process parameters (``sinterlab-plan``):
responses per sample, the design space, a GP surrogate per response and the three goals."""
