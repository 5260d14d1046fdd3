"""Pruning: masks, unstructured and structured criteria, surgery, EigenDamage."""

from .layerwise import obc_rows
from .masks import prunable_mask, sparsity_of
from .obs import OBS, SingularCurvatureError, inverse_spd
from .prune import METHODS, PruneResult, PruneStep, prune
from .records import PruningWarning
from .trace import OBSTrace, obs_trace, saliencies
from .structured import unit_saliencies, unit_update
from .surgery import remove_units, structurally_prunable
from .unstructured import woodbury_inverse

__all__ = [
    "prune", "PruneResult", "PruneStep", "METHODS", "PruningWarning", "obs_trace", "OBSTrace", "saliencies", "OBS",
    "inverse_spd", "SingularCurvatureError",
    "woodbury_inverse", "obc_rows", "prunable_mask", "sparsity_of", "remove_units", "structurally_prunable",
    "unit_saliencies", "unit_update",
]
