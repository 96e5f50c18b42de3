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
