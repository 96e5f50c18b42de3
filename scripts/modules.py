"""Print the package's module list for docs/architecture.md: one line per file, its docstring's first sentence.

    python scripts/modules.py            # print the block
    python scripts/modules.py --write    # replace the block in docs/architecture.md

tests/test_docs.py checks that the block names exactly the files the package has.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- modules:start -->", "<!-- modules:end -->"
WIDTH = 100


def first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split("\n\n")[0].split()).rstrip(":")
    cut = text.find(". ")
    text = text[: cut] if cut >= 0 else text.rstrip(".")
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def modules() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / "docscore").rglob("*.py"))


def block() -> str:
    names = modules()
    pad = max(len(str(n)) for n in names) + 1
    lines = [f"{str(n):<{pad}}{first_sentence(ROOT / n)}".rstrip() for n in names]
    return "\n".join([START, "```", *lines, "```", END])


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        text = DOC.read_text(encoding="utf-8")
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOC.write_text(head + block() + tail, encoding="utf-8")
    else:
        print(block())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
