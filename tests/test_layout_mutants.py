"""Tests of ``curvature/layout.py`` written from the mutation run's survivors: the defaults
of :func:`refprune.block_layouts`, the block names in the refusals of
:func:`refprune.blocks_to_flat`, and its refusal of containers other than a list or tuple.
Expected texts are built from the documented layout (``c`` output units, ``p`` input
features, plus one for a folded bias; the bias block of ``bias="separate"`` has ``p = 1``)."""

import numpy as np
import pytest

import refprune as rp


def _net():
    return rp.Sequential(rp.Linear(2, 3), rp.Tanh(), rp.Linear(3, 1, bias=False))


def test_block_layouts_folds_the_bias_by_default():
    model = _net()
    lays = rp.block_layouts(model)  # no bias=: one block per affine layer, the bias folded in
    assert [lay.part for lay in lays] == ["all", "all"]
    assert [(lay.c, lay.p) for lay in lays] == [(3, 2 + 1), (1, 3)]


def test_block_layouts_refusal_names_the_function_by_default():
    with pytest.raises(ValueError) as err:
        rp.block_layouts(_net(), bias="nope")
    assert str(err.value) == "block_layouts: bias must be one of ('fold', 'separate'), got 'nope'"


@pytest.mark.parametrize("index, name", [(0, "weights"), (1, "bias")])
def test_a_wrong_block_is_named_with_its_part(index, name):
    model = _net()
    c, p = (3, 2) if name == "weights" else (3, 1)
    blocks = [np.eye(6), np.eye(3), np.eye(3)]
    blocks[index] = np.eye(c * p + 1)
    with pytest.raises(ValueError) as err:
        rp.blocks_to_flat(model, blocks, bias="separate")
    label = f"block {index} ({model[0]!r} {name}: c = {c}, p = {p})"
    assert str(err.value).startswith(f"blocks_to_flat: {label} must be a pair (S, A) or a ({c * p}, {c * p}) matrix")


def test_a_complex_block_matrix_is_refused_by_its_name():
    model = _net()
    with pytest.raises(TypeError) as err:
        rp.blocks_to_flat(model, [np.eye(9) * 1j, np.eye(3)])
    assert str(err.value).startswith(f"blocks_to_flat: block 0 ({model[0]!r}: c = 3, p = 3) is complex")


@pytest.mark.parametrize("blocks", [np.stack([np.eye(9)] * 2), (b for b in [np.eye(9), np.eye(3)])],
                         ids=["array", "generator"])
def test_blocks_other_than_a_list_or_tuple_are_refused(blocks):
    with pytest.raises(TypeError, match="blocks_to_flat: blocks must be a list of"):
        rp.blocks_to_flat(_net(), blocks)
