"""How many coordinates a pruning request removes.

How many: ``sparsity=f`` removes ``floor(f * total)`` of the ``total`` prunable
coordinates (units, directions), a product within ``1e-9`` of an integer counting as
that integer (so ``31/58`` of 58 is 31); ``count=k`` removes exactly ``k``.  With
``steps`` rounds, round ``i`` reaches ``floor(f * total * i / steps)`` or
``floor(k * i / steps)`` removals.  A request that removes nothing warns.
"""

import numpy as np

from ..scalars import is_int, is_number
from .records import warn


def _check_fraction(sparsity):
    if not is_number(sparsity) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def how_many(sparsity, total):
    """``floor(sparsity * total)``, a product within 1e-9 of an integer taken as it."""
    return int(np.floor(sparsity * total + 1e-9))


def check_target(sparsity, count, steps):
    """``("sparsity", f)`` or ``("count", k)`` from the two options (one of them)."""
    if count is not None and sparsity is not None:
        raise ValueError("prune: give sparsity= or count=, not both")
    if count is None:
        return ("sparsity", _check_fraction(0.5 if sparsity is None else sparsity))
    if not is_int(count) or count < 0:
        raise ValueError(f"prune: count must be a non-negative int, got {count!r}")
    return ("count", int(count))


def round_goal(target, total, step, steps, base=0):
    """Cumulative removals after round ``step`` of ``steps``: ``base`` (removed before)
    plus the count, or the sparsity's share of ``total``."""
    kind, v = target
    if kind == "count":
        return base + (v * step) // steps
    return how_many(v * step / steps, total)


def warn_nothing_removed(method, target, total, done):
    """Warn (:class:`PruningWarning`) that a request removed nothing, stating the
    rounding that led there."""
    kind, v = target
    what = f"count={v}" if kind == "count" else f"sparsity={v!r} of {total} prunable floors to {how_many(v, total)}"
    warn(f"prune ({method}): {what}, and {done} are already removed: nothing was removed")
