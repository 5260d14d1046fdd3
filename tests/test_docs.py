"""The worked examples in ``docs/`` run as doctests: a newcomer who follows them gets
the numbers printed there."""

import doctest
import os

import pytest

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")


@pytest.mark.parametrize("name", ["pruning_explained.md"])
def test_doc_examples_run(name):
    result = doctest.testfile(os.path.join(DOCS, name), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0, result
