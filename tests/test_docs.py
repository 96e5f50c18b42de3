"""The docs as a user reads them: every ``docscore`` command in README.md and docs/*.md parses with today's CLI (no
unknown flag, no deprecated spelling, no missing required option), and every page the README's map names exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from docscore.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def commands(page: Path) -> list[str]:
    """The docscore commands in a page's fenced shell blocks (continuation lines joined, comments dropped)."""
    found, block = [], None
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            block = [] if block is None and line.strip("`").strip() in ("bash", "sh", "shell", "") else None
            continue
        if block is None:
            continue
        block.append(line)
        if line.rstrip().endswith("\\"):
            continue
        text = " ".join(part.rstrip().rstrip("\\") for part in block)
        block = []
        text = re.split(r"\s(?:\||&&|;|>|2>)\s", text.split(" #")[0])[0].strip()
        text = re.sub(r"\[(-[^\]]*)\]", r"\1", text)  # usage-style optional parts are checked too
        try:
            argv = shlex.split(text)
        except ValueError:
            continue
        while argv and ENV.match(argv[0]):
            argv = argv[1:]
        if "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["docscore"]:
            argv = ["docscore", *argv[argv.index("-m") + 2:]]
        if argv and argv[0].endswith("docscore") and len(argv) > 1 and not argv[1].startswith("-"):
            found.append(shlex.join(["docscore", *argv[1:]]))
    return found


ALL = [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands(page)]


def test_the_docs_hold_commands():
    assert len(ALL) >= 30, ALL
    assert {c.split()[1] for _, c in ALL} >= {"train", "import", "export-onnx", "verify", "score", "report", "bench"}


@pytest.mark.parametrize(("page", "command"), ALL, ids=[f"{p}:{c[:60]}" for p, c in ALL])
def test_every_documented_command_parses(page, command, capsys):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `{command}` does not parse (exit {e.code}): {capsys.readouterr().err.strip()}")
    err = capsys.readouterr().err
    assert "deprecated" not in err, f"{page}: `{command}` uses an old spelling: {err.strip()}"


def test_the_readme_map_names_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|benchmarks|samples)/[^)#]+)", readme)
    assert len(links) >= 9
    for link in links:
        assert (ROOT / link).exists(), link
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name}: {link}"
    assert len(readme.splitlines()) < 200


def test_the_architecture_page_lists_exactly_the_package_modules():
    """docs/architecture.md's module list is the package as it is: regenerate it with ``python scripts/modules.py
    --write`` after moving, adding or removing a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("modules_script", ROOT / "scripts" / "modules.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    listed = re.findall(r"^(docscore/\S+\.py)", (ROOT / "docs" / "architecture.md").read_text(), re.M)
    actual = [str(p) for p in script.modules()]
    assert listed == actual, "docs/architecture.md's module list is stale: run python scripts/modules.py --write"
    assert script.block() in (ROOT / "docs" / "architecture.md").read_text()
