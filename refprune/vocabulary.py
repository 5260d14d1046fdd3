"""One set of names for the curvature matrices, used by every function and option.

=====================  ===========================================================
name                   matrix (``docs/conventions.md`` §3)
=====================  ===========================================================
``"hessian"``          ``H = d^2 L / dtheta^2``
``"ggn"``              ``G = R sum_n J_n^T Lambda_n J_n``
``"fisher"``           true Fisher ``R sum_n E_{y~p(.|f_n)}[g g^T]`` (equals ``G``)
``"mc_fisher"``        the expectation replaced by a mean over sampled targets
``"empirical_fisher"`` ``R sum_n g(y_n) g(y_n)^T`` at the observed targets
=====================  ===========================================================

Every function that selects one of these takes it as ``curvature=``.  Earlier
spellings (``kind="true"``, ``fisher="type-2"``, ``diagonal="fisher"``...) are refused
with an error that names the current one, never reinterpreted.
"""

import functools

CURVATURES = ("hessian", "ggn", "fisher", "mc_fisher", "empirical_fisher")
#: the positive semi-definite ones, ``R sum_n J_n^T Phi_n J_n`` (K-FAC, EKFAC approximate these)
FISHER_LIKE = ("ggn", "fisher", "mc_fisher", "empirical_fisher")
#: the Fishers proper
FISHERS = ("fisher", "mc_fisher", "empirical_fisher")

#: earlier spellings and their current names
OLD_SPELLINGS = {
    "type-2": "ggn",
    "type2": "ggn",
    "true": "fisher",
    "true_fisher": "fisher",
    "mc": "mc_fisher",
    "empirical": "empirical_fisher",
    "emp": "empirical_fisher",
    "gauss_newton": "ggn",
}


def check_curvature(value, allowed, where, option="curvature"):
    """``value`` if it is one of ``allowed``; otherwise a ``ValueError`` that lists
    ``allowed`` and, for an earlier spelling, names the current one (suggesting it only
    if ``where`` takes it)."""
    if isinstance(value, str) and value in allowed:
        return value
    if isinstance(value, str) and value in OLD_SPELLINGS:
        new = OLD_SPELLINGS[value]
        if new not in allowed:
            raise ValueError(f"{where}: {option}={value!r} is an earlier spelling of {new!r}, which {where} does "
                             f"not take; choose one of {tuple(allowed)}")
        raise ValueError(
            f"{where}: {option}={value!r} is an earlier spelling; write {option}={new!r} "
            f"(one vocabulary for every function: {CURVATURES})"
        )
    raise ValueError(f"{where}: {option} must be one of {tuple(allowed)}, got {value!r}")


def renamed_options(accepted=CURVATURES, **renames):
    """Decorator refusing keyword options that were renamed: ``renamed_options(kind="curvature")``
    makes ``f(..., kind="mc")`` raise ``TypeError`` naming ``curvature="mc_fisher"``.
    ``accepted``: the names the function takes; a value whose current name is not one of
    them is answered with the list, never with a name the function would refuse."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    val = kwargs[old]
                    hint = OLD_SPELLINGS.get(val, val) if isinstance(val, str) else val
                    name = fn.__qualname__.replace(".__init__", "")
                    if hint not in accepted:
                        raise TypeError(f"{name}: the option {old}= was renamed {new}=, and {name} takes "
                                        f"{new}= one of {tuple(accepted)}, got {old}={val!r}")
                    raise TypeError(
                        f"{name}: the option {old}= was renamed {new}=; "
                        f"write {new}={hint!r} (names: {CURVATURES})"
                    )
            return fn(*args, **kwargs)

        return inner

    return wrap
