"""The sensory cortex: five signed, point-in-time feature dimensions and their fusion."""

from emp_core.sensory.features import FeatureInputError, compute_features, dimension_columns
from emp_core.sensory.fusion import DEFAULT_WEIGHTS, DIMENSIONS
from emp_core.sensory.why import MacroInputs

__all__ = ["DEFAULT_WEIGHTS", "DIMENSIONS", "FeatureInputError", "MacroInputs", "compute_features",
           "dimension_columns"]
