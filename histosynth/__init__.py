"""histosynth: synthetic histopathology as a reproducible Snakemake workflow.

The package holds all logic; ``workflow_scripts/`` only adapts the ``snakemake`` object to it.
"""

import logging

__version__ = "0.1.0"


class _DropEmptyFp32Warning(logging.Filter):
    """diffusers warns "modules ... that should be kept in float32: []" on every ``.to(dtype)`` of a
    model that keeps no module in float32 (an empty list is not None there): nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


# attached to the emitting logger itself (no diffusers import needed), so only that message goes
logging.getLogger("diffusers.models.modeling_utils").addFilter(_DropEmptyFp32Warning())
