"""histosynth: synthetic histopathology as a reproducible Snakemake workflow.

The package holds all logic; ``workflow_scripts/`` only adapts the ``snakemake`` object to it.
"""

__version__ = "0.1.0"
