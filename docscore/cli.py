"""The ``docscore`` command line: a thin layer that parses options into the API's dataclasses and calls it.

Each subcommand lives in ``docscore/commands/<name>.py`` with ``register(subparsers)`` (which must stay cheap:
no torch import) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from docscore import __version__
from docscore.errors import DocscoreError

# subcommand name -> module under docscore.commands
COMMANDS = {
    "train": "train",
    "import": "import_",
    "export-onnx": "export",
    "verify": "verify",
    "score": "score",
    "report": "report",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docscore",
        description="Train a body + head text classifier, export it to a parity-gated ONNX bundle, "
        "and score Parquet archives with ONNX Runtime.",
    )
    parser.add_argument("--version", action="version", version=f"docscore {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"docscore.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"docscore.commands.{module}":
                raise
            continue  # not built yet
        p = mod.register(sub, name)
        p.set_defaults(_run=mod.run)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _PipeSafeStdout:
    """``sys.stdout`` for a command whose reader may go away (``docscore score ... | head -1``): once the pipe is
    closed, the rest of the output is dropped, so the command's exit code stays the run's, never a traceback."""

    def __init__(self, real):
        self._real = real

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._real.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._real.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._real.flush()
        except BrokenPipeError:
            self._drop()

    def __getattr__(self, name):
        return getattr(self._real, name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    real_stdout = sys.stdout
    try:
        sys.stdout.fileno()
        sys.stdout = _PipeSafeStdout(real_stdout)
    except (AttributeError, OSError, ValueError):  # captured (tests, notebooks): nothing to guard
        pass
    try:
        return int(args._run(args) or 0)
    except DocscoreError as e:
        print(f"docscore {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()
        sys.stdout = real_stdout


def export_onnx_main(argv: list[str] | None = None) -> int:
    """The standalone ``export-onnx`` console script: same as ``docscore export-onnx``."""
    return main(["export-onnx", *(sys.argv[1:] if argv is None else argv)])
