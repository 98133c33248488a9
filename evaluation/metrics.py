"""The grounding metrics as plain functions (no ``evaluate`` needed).

The single source of the math is ``grounding_accuracy/grounding_metrics.py``: it must stay a flat,
numpy/scipy-only file next to the ``evaluate`` module script so that ``evaluate.load(folder)`` copies
it for users who do not have ``medrg`` installed. This module only re-exports its public names (its ``__all__``).
"""

from .grounding_accuracy import grounding_metrics as _grounding_metrics
from .grounding_accuracy.grounding_metrics import *  # noqa: F403 (its public names, its __all__)

__all__ = list(_grounding_metrics.__all__)
