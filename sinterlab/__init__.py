"""sinterlab: predict laser-sintering process parameters from SEM micrographs.

The package follows the data flow: ``data`` (descriptor -> preprocess -> patches -> splits),
``features`` (frozen backbone + embedding cache), ``models`` (MLP head), ``evaluation``
(metrics, baselines, figures, reports), ``cli`` (the console scripts), ``synth`` (demo data).
"""

__version__ = "0.1.0"
