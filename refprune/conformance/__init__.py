"""Conformance: check another implementation of gradients, curvature, K-FAC or pruning
against refprune over a zoo of small networks, in one assertion.

>>> from refprune import conformance as cf
>>> report = cf.check(cf.Adapter(grad=my_grad, hessian=my_hessian))   # doctest: +SKIP
>>> assert report.ok, report                                          # doctest: +SKIP
"""

from .diagnosis import compare_pairs, diagnose, diagnose_pairs, relative_error
from .harness import DEFAULT_RTOL, QUANTITIES, Adapter, Failure, QuantityResult, Report, assert_conforms, check
from .optimizer_quantities import OPTIMIZER_NEIGHBOURS, OPTIMIZER_QUANTITIES, optimizer_options
from .pruning_quantities import PRUNING_QUANTITIES, NotCompared
from .zoo import ARCHITECTURES, LOSSES, Case, build_case, drawn_zoo, make_case, zoo

__all__ = ["Adapter", "check", "assert_conforms", "Report", "QuantityResult", "Failure", "QUANTITIES",
           "DEFAULT_RTOL", "Case", "zoo", "drawn_zoo", "make_case", "build_case", "ARCHITECTURES", "LOSSES",
           "diagnose", "diagnose_pairs", "compare_pairs", "relative_error", "OPTIMIZER_QUANTITIES",
           "OPTIMIZER_NEIGHBOURS", "optimizer_options", "PRUNING_QUANTITIES", "NotCompared"]

# one case per call (a test item per case: the pytest plugin, refprune.testing.strategies.cases())
from .case_check import check_case  # noqa: E402

__all__ += ["check_case"]
