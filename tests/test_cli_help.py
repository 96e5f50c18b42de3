"""Every command's --help states each default once and never a meaningless one."""

from __future__ import annotations

import re

import pytest

from docscore.cli import main

COMMANDS = [["train"], ["export-onnx"], ["import"], ["verify"], ["score"], ["report"], ["bench", "latency"],
            ["bench", "throughput"], ["bench", "choose"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_states_each_default_once(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"\(default: (None|True|False)\)", text), text
    for block in re.split(r"\s(?=-{1,2}[a-z])", text):  # one option's help at a time
        assert len(re.findall(r"\bdefault\b", block.lower())) <= 2, block  # "default: x" once, maybe "(default)"
        assert "(default) (default" not in block, block


def test_one_name_per_concept_and_old_spellings_warn(tmp_path, capsys):
    """--model BUNDLE and --output OUT on every command; the old positional / --out / --data spellings still work
    for one release and say what replaces them."""
    from docscore.commands import deprecated_option, deprecated_positional, one_of
    import argparse

    p = argparse.ArgumentParser(prog="docscore x")
    p.add_argument("--model", dest="bundle")
    deprecated_positional(p, "bundle", "--model", "BUNDLE")
    p.add_argument("--output", dest="out", default="runs/bench")
    deprecated_option(p, "--out", "out", "--output")
    args = p.parse_args(["b1", "--out", "o1"])
    err = capsys.readouterr().err
    assert one_of(args, "bundle", "--model", "BUNDLE", "x") == "b1" and args.out == "o1"
    assert "the positional argument is deprecated" in err and "use --model BUNDLE" in err
    assert "--out is deprecated" in err and "use --output" in err
    args = p.parse_args(["--model", "b2"])
    assert one_of(args, "bundle", "--model", "BUNDLE", "x") == "b2" and args.out == "runs/bench"
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:
        one_of(p.parse_args([]), "bundle", "--model", "BUNDLE", "x")
    assert e.value.code == 2 and "required: --model BUNDLE" in capsys.readouterr().err
    # the commands themselves: report's positional OUT still works (with the warning), verify without a bundle is 2
    assert main(["report", str(tmp_path)]) == 2  # not a score output: the positional still reached the command
    err = capsys.readouterr().err
    assert "use --output OUT" in err and "is not a docscore score output" in err
    with pytest.raises(SystemExit) as e:
        main(["verify"])
    assert e.value.code == 2 and "--model BUNDLE" in capsys.readouterr().err
    for command in (["score"], ["verify"], ["bench", "latency"], ["bench", "throughput"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--model" in capsys.readouterr().out, command
    for command in (["train"], ["export-onnx"], ["import"], ["score"], ["report"], ["bench", "latency"],
                    ["bench", "throughput"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--output" in capsys.readouterr().out, command
