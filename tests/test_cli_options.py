"""The command line's options are rows of the one options table (refprune.options, CLI
section): every option of every subcommand has a row, each typed value is checked
against its row, an option that does not apply to the run is refused by name even when
typed at its default, and the refusals leave files as they were."""

import os
import warnings

import numpy as np
import pytest

import refprune as rp
from refprune import options
from refprune.cli import build_parser, hessian_mode, main


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _option_strings(parser):
    return {s for a in parser._actions for s in (a.option_strings or [a.dest]) if s not in ("-h", "--help")}


def test_every_option_of_every_subcommand_is_a_row_of_the_table():
    import argparse

    from refprune.cli_parsing import add_options

    parser = build_parser()
    for command, sub in parser.commands.items():
        assert _option_strings(sub) == {o.name for o in options.TABLE[f"refprune {command}"]}, command
    demo_parser = argparse.ArgumentParser()
    add_options(demo_parser, "demo")
    assert _option_strings(demo_parser) == {o.name for o in options.TABLE["refprune demo"]}
    text = options.describe("refprune hessian")
    for o in options.TABLE["refprune hessian"]:
        assert f"  {o.name} = {o.default!r}:" in text and o.accepted in text


def test_the_mode_decides_what_applies():
    full = {o.dest: o.default for o in options.TABLE["refprune hessian"]}
    assert hessian_mode(full) == {"curvature hessian", "draws"}
    assert hessian_mode(dict(full, data="d.npz", params="p.npz", out="H.npy", dry_run=True, curvature="ggn")) == {
        "curvature ggn", "data", "out", "dry-run"}
    assert "draws" in hessian_mode(dict(full, data="d.npz", params="p.npz", curvature="mc_fisher"))


def test_a_typed_option_is_refused_even_at_its_default(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, X=np.zeros((3, 2)), y=np.zeros(3, int))
    given = {"--model": "Linear(2, 2)", "--data": str(data)}
    values = options.check_command_line("hessian", given, hessian_mode)
    assert values["samples"] == 32 and values["seed"] == 0 and values["block_rows"] is None
    with pytest.raises(ValueError, match=r"^refprune hessian: --samples is for random data; --data .* \(got "
                                         r"--samples 32\)$"):
        options.check_command_line("hessian", dict(given, **{"--samples": "32"}), hessian_mode)
    # a keyword option at its default is never refused (prune's rows): the two kinds differ on purpose
    options.refuse_inapplicable("prune", {"diagonal": "exact"}, method="obs")


@pytest.mark.parametrize("text, words", [
    ("1e3", "got '1e3' (not an int)"), ("-2", "got -2"), ("", "got '' (not an int)"), ("0x10", "(not an int)")])
def test_numbers_are_read_by_the_rows_kind(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        options.check_command_line("hessian", {"--model": "Linear(2, 2)", "--block-rows": text}, hessian_mode)


def test_an_overflowing_forward_pass_is_one_line_without_numpys_warning(capsys, tmp_path):
    np.savez(tmp_path / "d.npz", X=np.full((3, 2), 1e200), y=np.zeros(3, int))
    np.savez(tmp_path / "p.npz", param0=np.full((2, 2), 1e200), param1=np.zeros(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, "hessian", "--model", "Linear(2, 2)", "--data", tmp_path / "d.npz", "--params",
                             tmp_path / "p.npz")
    assert code == 2 and out == "" and not caught
    assert err == (f"refprune hessian: error: the model at --data {tmp_path / 'd.npz'} and --params "
                   f"{tmp_path / 'p.npz'}: the network's output is not finite (6 of 6 entries overflowed to inf or "
                   "NaN): inputs or parameters too large for float64 (largest |X| 1e+200)\n")


def test_a_refused_resume_leaves_the_partial_file_and_its_record(capsys, tmp_path, monkeypatch):
    from refprune.curvature import store

    argv = ("hessian", "--model", "Linear(4, 5) Tanh Linear(5, 3)", "--input-shape", "4", "--samples", "8", "--out",
            tmp_path / "H.npy")
    real = store.BlockRecord.mark

    def mark_then_stop(self, key, block):
        real(self, key, block)
        if self.persistent:
            raise KeyboardInterrupt

    monkeypatch.setattr(store.BlockRecord, "mark", mark_then_stop)
    assert run(capsys, *argv, "--block-rows", "5")[0] == 130
    monkeypatch.setattr(store.BlockRecord, "mark", real)
    partial = tmp_path / "H.npy.partial"
    before = partial.read_bytes(), (tmp_path / "H.npy.partial.refprune.json").read_bytes()
    code, _, err = run(capsys, *argv, "--resume", "--block-rows", "10")
    assert code == 2 and "was written in other blocks" in err and "--block-rows 10 gives" in err
    assert (partial.read_bytes(), (tmp_path / "H.npy.partial.refprune.json").read_bytes()) == before
    code, _, err = run(capsys, *argv, "--resume", "--block-rows", "5")  # the interrupted run's options: it finishes
    model = rp.Sequential(rp.Linear(4, 5), rp.Tanh(), rp.Linear(5, 3))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    ref = rp.hessian(model, model.init(seed=0), X, y, rp.CrossEntropyLoss())
    assert code == 0 and np.abs(rp.load_matrix(str(tmp_path / "H.npy")) - ref).max() <= 1e-12 * np.abs(ref).max()
    assert not os.path.exists(partial)


def test_layers_separated_by_a_dash_at_any_spacing():
    from refprune.cli import parse_model

    a = parse_model("Conv2d(1, 2, 3, padding=(1,1))-Tanh - Flatten-Linear(32, 2)")
    assert [type(layer).__name__ for layer in a] == ["Conv2d", "Tanh", "Flatten", "Linear"]
    with pytest.raises(Exception, match="Linear"):  # a minus inside the parentheses stays there
        parse_model("Linear(3, -2)")
