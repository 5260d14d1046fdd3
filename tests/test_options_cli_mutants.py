"""The command-line rows of the options table (refprune.options, CLI section) against
messages written out by hand.

``refuse_inapplicable`` documents ``method`` of a command-line table as the run's mode,
a set of words; ``check_command_line`` passes a mode that also carries every option's
value, but any set will do, and then the refusal fills its reason from the typed values
alone (an option neither typed nor in the mode reads "(not given)").  The rows are built
at import, so the row builder ``_cli`` is called here directly."""

import numpy as np
import pytest

from refprune import options
from refprune.cli import hessian_mode
from refprune.options import CliOption

_WHERE = "refprune hessian"


def test_cli_builder_passes_every_field():
    needs = (("data", False, "is for random data"),)
    got = options._cli("--x", "int", 3, "doc", low=1, needs=needs, metavar="N", nargs="+", accepted_text="words")
    assert got == CliOption("--x", "int", 3, "doc", low=1, needs=needs, metavar="N", nargs="+",
                            accepted_text="words")
    assert isinstance(got, CliOption) and got.dest == "x"


def test_a_plain_mode_fills_the_reason_from_the_typed_values():
    with pytest.raises(ValueError) as e:
        options.refuse_inapplicable(_WHERE, {"--samples": 32, "--data": "d.npz"}, method=frozenset({"data"}))
    assert str(e.value) == ("refprune hessian: --samples is for random data; --data d.npz gives the samples and "
                            "their shape (got --samples 32)")


def test_an_option_neither_typed_nor_in_the_mode_reads_not_given():
    with pytest.raises(ValueError) as e:
        options.refuse_inapplicable(_WHERE, {"--samples": 32}, method=frozenset({"data"}))
    assert str(e.value) == ("refprune hessian: --samples is for random data; --data (not given) gives the samples "
                            "and their shape (got --samples 32)")


def test_a_refused_shape_is_shown_as_typed(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, X=np.zeros((3, 4, 4)), y=np.zeros(3, int))
    given = {"--model": "Flatten Linear(16, 2)", "--data": str(data), "--input-shape": ["4", "4"]}
    with pytest.raises(ValueError) as e:
        options.check_command_line("hessian", given, hessian_mode)
    assert str(e.value) == (f"refprune hessian: --input-shape is for random data; --data {data} gives the samples "
                            "and their shape (got --input-shape 4 4)")


def test_text_is_never_read_as_a_path(tmp_path):
    model = options._row(_WHERE, "--model")
    assert model.kind == "text"
    # a directory, or a name in a directory that does not exist, is text like any other
    assert options.cli_value(_WHERE, model, str(tmp_path)) == str(tmp_path)
    missing = str(tmp_path / "no" / "such")
    assert options.cli_value(_WHERE, model, missing) == missing


def test_a_reason_names_any_option_by_its_dest():
    row = CliOption("--x", "flag", False, "doc", needs=(("w", True, "needs w, got --dry-run {dry_run}"),))
    values = {"--x": True, "--dry-run": "typed", "__table__": "t"}
    assert row.refusal_for("p", frozenset(), values) == "p: --x needs w, got --dry-run typed"
    assert row.refusal_for("p", frozenset({"w"}), values) is None


def test_a_dest_is_the_name_without_its_leading_dashes_only():
    # "--Xray" -> "Xray": only dashes are stripped, whatever letter follows them
    row = CliOption("--x", "flag", False, "doc", needs=(("w", True, "needs w, got {Xray}"),))
    assert CliOption("--Xray", "int", 0, "doc").dest == "Xray"
    assert row.refusal_for("p", frozenset(), {"--x": True, "--Xray": 5}) == "p: --x needs w, got 5"
