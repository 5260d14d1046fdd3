"""Curvature: exact matrices, their output-space factors, diagonals, Kronecker factors,
EKFAC and the operator interface they share.

=====================  ===========================================================
module                 content
=====================  ===========================================================
``exact``              Hessian, GGN, residual, Fishers by block assembly (docs §4)
``output_factors``     ``Phi_n = Gamma_n Gamma_n^T`` by curvature name; Monte Carlo targets
``diagonal``           exact diagonals and OBD's approximation (docs §7)
``kronecker``          K-FAC and KFC, damping forms (docs §8)
``ekfac``              EKFAC (docs §8)
``operators``          ``CurvatureOperator`` and the exact, block, diagonal, dense ones
``parallel``           the exact matrices as tasks on an executor (docs §11)
``store``              the record a block store keeps; ``load_matrix`` verifies a result
=====================  ===========================================================
"""

from .diagonal import curvature_diagonal, fisher_diagonal, ggn_diagonal, hessian_diagonal, obd_diagonal
from .ekfac import EKFAC, ekfac
from .exact import CurvatureTooLargeError, fisher, ggn, hessian, residual
from .kronecker import KFAC, KroneckerBlock, kfac
from .operators import BlockDiagonal, CurvatureOperator, Dense, Diagonal, ExactCurvature, block_diagonal
from .store import IncompleteResultError, load_matrix

__all__ = ["hessian", "ggn", "residual", "fisher", "CurvatureTooLargeError", "hessian_diagonal", "ggn_diagonal",
           "fisher_diagonal", "curvature_diagonal", "obd_diagonal", "kfac", "KFAC", "KroneckerBlock", "ekfac",
           "EKFAC", "CurvatureOperator", "ExactCurvature", "BlockDiagonal", "Diagonal", "Dense", "block_diagonal",
           "load_matrix", "IncompleteResultError"]
