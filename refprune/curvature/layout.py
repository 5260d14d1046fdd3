"""Per-layer Kronecker blocks and the flat ``theta`` order, both ways.

Libraries store K-FAC as a pair ``(G, A)`` per layer (refprune calls ``G`` ``S``), over the
rows of ``M = [W_r | b]`` (``c`` output units by ``p`` columns: the ``r`` weights of a unit,
then its bias): the block is ``S kron A`` over ``vec(M)`` in row-major order, index
``i p + k`` for unit ``i`` and column ``k`` (``docs/conventions.md`` §4, "Layouts").  The
flat parameter vector ``theta`` is PyTorch's ``weight.ravel()`` then ``bias``, layer by
layer (§1): the bias of unit ``i`` sits after *all* the weights, not after its own row.
So ``np.kron(S, A)`` is not the layer's block of an ``(n, n)`` matrix in ``theta`` order;
:func:`blocks_to_flat` re-indexes it and :func:`flat_to_blocks` goes back.

With ``bias="separate"`` (ASDL's and curvlinops' layout) a layer with a bias has two
blocks, weights first: ``S kron A_W`` over ``vec(W_r)`` and the bias block ``S`` (as the
pair ``(S, [[1]])`` or the ``(c, c)`` matrix), with no weight-bias coupling.
"""

import numpy as np

from ..checks import real_array
from ..nn import AffineLayer, Sequential
from .kronecker import BIAS_TREATMENTS, LayerLayout


def block_layouts(model, bias="fold", where="block_layouts"):
    """The :class:`~refprune.curvature.kronecker.LayerLayout` of every block of ``model``
    in ``theta`` order: one per affine layer (``bias="fold"``), or two per layer with a
    bias, weights then bias (``bias="separate"``)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"{where}: model must be a refprune.Sequential, got {type(model).__name__}")
    if not isinstance(bias, str) or bias not in BIAS_TREATMENTS:
        raise ValueError(f"{where}: bias must be one of {BIAS_TREATMENTS}, got {bias!r}")
    offsets = model.param_offsets()
    out = []
    for j, layer in enumerate(model):
        if not isinstance(layer, AffineLayer):
            continue
        if bias == "separate" and layer.bias:
            out += [LayerLayout(layer, offsets[j], "weight"), LayerLayout(layer, offsets[j], "bias")]
        else:
            out.append(LayerLayout(layer, offsets[j]))
    return out


def _label(j, lay):
    part = {"all": "", "weight": " weights", "bias": " bias"}[lay.part]
    return f"block {j} ({lay.layer!r}{part}: c = {lay.c}, p = {lay.p})"


def _block_matrix(entry, lay, label, where):
    """The ``(c p, c p)`` matrix of one entry: a pair ``(S, A)`` or the matrix itself."""
    c, p = lay.c, lay.p
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(f"{where}: {label} must be a pair (S, A) or a ({c * p}, {c * p}) matrix, got a "
                             f"{type(entry).__name__} of length {len(entry)}")
        S = real_array(entry[0], f"{where}: S of {label}")
        A = real_array(entry[1], f"{where}: A of {label}")
        if S.shape != (c, c) or A.shape != (p, p):
            raise ValueError(f"{where}: {label} must have S of shape ({c}, {c}) and A of shape ({p}, {p}), got S "
                             f"{S.shape} and A {A.shape}")
        return np.kron(S, A)
    K = real_array(entry, f"{where}: {label}")
    if K.shape != (c * p, c * p):
        raise ValueError(f"{where}: {label} must be a pair (S, A) or a ({c * p}, {c * p}) matrix over vec([W | b]), "
                         f"got shape {K.shape}")
    return K


def blocks_to_flat(model, blocks, bias="fold"):
    """The ``(n, n)`` block-diagonal matrix in ``theta`` order from per-layer blocks.

    Parameters
    ----------
    model : refprune.Sequential
    blocks : list
        One entry per block (:func:`block_layouts`: one per Linear/Conv2d, two per layer
        with a bias when ``bias="separate"``), in layer order.  An entry is a pair
        ``(S, A)`` (``S (c, c)`` over output units, ``A (p, p)`` over ``[inputs; 1]``: the
        ``(G, A)`` other libraries store), meaning ``S kron A``, or a ``(c p, c p)``
        matrix over row-major ``vec([W_r | b])``.
    bias : {"fold", "separate"}

    Returns
    -------
    ndarray (n, n)
        Entry ``K[a, b]`` for flat parameters ``a``, ``b`` of the same block is the
        block's entry at their ``vec([W_r | b])`` positions; zero across blocks.  NaN or
        inf entries are carried over, not refused: the blocks are usually another
        implementation's, and the comparison that follows names them
        (:func:`refprune.conformance.relative_error` fails a result with NaN or inf).

    Example
    -------
    >>> import refprune as rp
    >>> import numpy as np
    >>> model = rp.Sequential(rp.Linear(2, 3))
    >>> S, A = np.diag([1.0, 2.0, 3.0]), np.eye(3)            # A over [x1, x2, 1]
    >>> K = rp.blocks_to_flat(model, [(S, A)])
    >>> float(K[6, 6])                                         # the bias of unit 0, after all six weights
    1.0
    """
    lays = block_layouts(model, bias, "blocks_to_flat")
    if isinstance(blocks, (str, bytes, dict)) or not isinstance(blocks, (list, tuple)):
        raise TypeError(f"blocks_to_flat: blocks must be a list of (S, A) pairs or matrices, one per block, got "
                        f"{type(blocks).__name__}")
    if len(blocks) != len(lays):
        raise ValueError(f"blocks_to_flat: blocks has {len(blocks)} entries, the model has {len(lays)} blocks with "
                         f"bias={bias!r} (one per Linear/Conv2d"
                         + (", two per layer with a bias: weights, then bias)" if bias == "separate" else ")"))
    n = model.n_params
    out = np.zeros((n, n))
    for j, (entry, lay) in enumerate(zip(blocks, lays)):
        K = _block_matrix(entry, lay, _label(j, lay), "blocks_to_flat")
        s = slice(lay.offset, lay.offset + lay.size)
        out[s, s] = lay.to_flat_order(K)
    return out


def flat_to_blocks(model, K, bias="fold"):
    """The diagonal blocks of an ``(n, n)`` matrix in ``theta`` order, each re-indexed to
    row-major ``vec([W_r | b])``: the inverse of :func:`blocks_to_flat` on
    block-diagonal matrices (the entries across blocks are not returned).

    Returns a list of ``(c p, c p)`` arrays, one per block (:func:`block_layouts`); a
    K-FAC block is ``np.kron(S, A)`` in this order.
    """
    lays = block_layouts(model, bias, "flat_to_blocks")
    n = model.n_params
    K = real_array(K, "flat_to_blocks: K")
    if K.shape != (n, n):
        raise ValueError(f"flat_to_blocks: K must be ({n}, {n}) for the model's n = {n} parameters, got shape "
                         f"{K.shape}")
    return [lay.from_flat_order(K[lay.offset : lay.offset + lay.size, lay.offset : lay.offset + lay.size])
            for lay in lays]
