"""refprune.cli_parsing against the options table it reads (refprune.options.TABLE): every
row becomes the argparse argument its fields describe (help "doc (default D)", the
metavar of its kind, nargs, flags that store True, nothing typed reads None), the
required exclusive group, and parse_checked's one-line refusals and returned values."""

import argparse

import pytest

from refprune.cli_parsing import OneLineParser, _argument, add_options, parse_checked
from refprune.options import TABLE, CliOption

_KIND_METAVAR = {"int": "N", "seed": "N", "real": "X"}  # the module docstring's rule, by hand


def _actions(parser):
    return {a.option_strings[0] if a.option_strings else a.dest: a for a in parser._actions}


@pytest.mark.parametrize("command", ["hessian", "fixtures", "check", "demo"])
def test_every_row_becomes_the_argument_it_describes(command):
    ap = OneLineParser(prog=f"refprune {command}")
    add_options(ap, command, group=("--model", "--model-json") if command == "hessian" else ())
    actions = _actions(ap)
    for o in TABLE[f"refprune {command}"]:
        a = actions[o.name]
        with_default = o.default is not None and o.kind != "flag"
        assert a.help == (f"{o.doc} (default {o.default})" if with_default else o.doc), o.name
        if o.positional:
            assert a.option_strings == [] and a.dest == o.name and a.nargs is None
            continue
        assert a.option_strings == [o.name] and a.dest == o.dest and a.default is None
        if o.kind == "flag":
            assert isinstance(a, argparse._StoreConstAction) and a.const is True and a.nargs == 0
            continue
        assert isinstance(a, argparse._StoreAction) and a.const is None
        want = "{" + ",".join(o.choices) + "}" if o.kind == "choice" else o.metavar or _KIND_METAVAR[o.kind]
        assert a.metavar == want, o.name
        assert a.nargs == o.nargs


def test_typed_values_and_flags_are_read_and_nothing_typed_is_none():
    ap = OneLineParser(prog="refprune hessian")
    add_options(ap, "hessian", group=("--model", "--model-json"))
    ns = ap.parse_args(["--model", "Linear(2, 2)", "--input-shape", "2", "3", "--dry-run", "--seed", "4"])
    assert ns.model == "Linear(2, 2)" and ns.input_shape == ["2", "3"] and ns.dry_run is True and ns.seed == "4"
    untyped = [o.dest for o in TABLE["refprune hessian"] if o.name not in
               ("--model", "--input-shape", "--dry-run", "--seed")]
    assert all(getattr(ns, d) is None for d in untyped)


def test_the_metavar_of_a_kind_without_one_and_a_choice():
    names, kw = _argument(CliOption("--x", "text", None, "some text"))
    assert names == ("--x",) and kw == dict(help="some text", default=None, metavar="VALUE")
    names, kw = _argument(CliOption("--r", "real", 0.5, "a real"))
    assert kw == dict(help="a real (default 0.5)", default=None, metavar="X")
    names, kw = _argument(CliOption("--k", "int", 3, "a count", nargs="+"))
    assert kw == dict(help="a count (default 3)", default=None, metavar="N", nargs="+")
    names, kw = _argument(CliOption("--s", "seed", 0, "a seed"))
    assert kw == dict(help="a seed (default 0)", default=None, metavar="N")
    names, kw = _argument(CliOption("--c", "choice", "a", "pick", choices=("a", "b")))
    assert kw == dict(help="pick (default a)", default=None, metavar="{a,b}")
    names, kw = _argument(CliOption("--f", "flag", False, "on or off"))
    assert kw == dict(help="on or off", default=None, action="store_const", const=True)


def test_the_group_is_required_and_exclusive(capsys):
    ap = OneLineParser(prog="refprune hessian")
    add_options(ap, "hessian", group=("--model", "--model-json"))
    for argv, words in (([], "one of the arguments --model --model-json is required"),
                        (["--model", "Linear(2,2)", "--model-json", "m.json"],
                         "argument --model-json: not allowed with argument --model")):
        with pytest.raises(SystemExit) as e:
            ap.parse_args(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err == f"refprune hessian: error: {words} (see refprune hessian --help)\n"
    # the others are not in the group: any of them with --model is accepted
    assert ap.parse_args(["--model", "Linear(2,2)", "--workers", "2"]).workers == "2"
    ap = OneLineParser(prog="refprune demo")
    add_options(ap, "demo")  # no group: nothing is required
    assert ap.parse_args([]).net is None


def test_parse_checked_returns_the_checked_values_and_the_parsers_own(tmp_path):
    top = OneLineParser(prog="refprune")
    sub = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    fixtures = sub.add_parser("fixtures")
    add_options(fixtures, "fixtures")
    ns = parse_checked(top, ["fixtures", str(tmp_path)], "fixtures", sub=fixtures)
    assert vars(ns) == {"command": "fixtures", "directory": str(tmp_path), "quiet": False}
    ap = OneLineParser(prog="refprune demo")
    add_options(ap, "demo")
    ns = parse_checked(ap, ["--steps", "3", "--lr", "0.5", "--net", "conv"], "demo")
    assert vars(ns) == {"net": "conv", "hidden": None, "steps": 3, "lr": 0.5, "seed": 0, "plot": None,
                        "heatmaps": None}


def test_a_refusal_is_one_line_from_the_subcommands_parser(capsys, tmp_path):
    top = OneLineParser(prog="refprune")
    sub = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    demo = sub.add_parser("demo")
    add_options(demo, "demo")
    with pytest.raises(SystemExit) as e:
        parse_checked(top, ["demo", "--steps", "-1"], "demo", sub=demo)
    assert e.value.code == 2
    assert capsys.readouterr().err == ("refprune demo: error: --steps must be a positive int, got -1 "
                                       "(see refprune demo --help)\n")
    # without ``sub`` the parser given reports it
    with pytest.raises(SystemExit):
        parse_checked(top, ["demo", "--steps", "-1"], "demo")
    assert capsys.readouterr().err == ("refprune: error: --steps must be a positive int, got -1 "
                                       "(see refprune --help)\n")


def test_the_mode_decides_what_applies_and_a_message_without_the_prefix_is_kept(capsys, tmp_path):
    ap = OneLineParser(prog="refprune hessian")
    add_options(ap, "hessian", group=("--model", "--model-json"))
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    argv = ["--model", "Linear(2,2)", "--data", str(data), "--samples", "3"]
    with pytest.raises(SystemExit):
        parse_checked(ap, argv, "hessian", lambda v: frozenset({"data"}))
    err = capsys.readouterr().err
    assert err.startswith("refprune hessian: error: --samples is for random data") and err.count("\n") == 1
    # a mode without "data": --samples applies and is checked
    ns = parse_checked(ap, argv, "hessian", lambda v: frozenset({"draws"}))
    assert ns.samples == 3 and ns.data == str(data)

    def odd(values):
        raise ValueError("a message of another origin")

    with pytest.raises(SystemExit):
        parse_checked(ap, argv, "hessian", odd)
    assert capsys.readouterr().err == ("refprune hessian: error: a message of another origin "
                                       "(see refprune hessian --help)\n")
