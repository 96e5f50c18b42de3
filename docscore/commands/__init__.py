"""The CLI's subcommands, one module each (``register(subparsers, name)`` and ``run(args) -> int``)."""

from __future__ import annotations

import argparse
import sys

# One name per concept, on every command that takes it (README "Documentation" and docs/architecture.md):
#   --model BUNDLE    the bundle written by export-onnx (score, verify, bench)
#   --output OUT      what a command writes: a checkpoint (train, import), a bundle (export-onnx), scores (score,
#                     read by report), benchmark results (bench)
#   --verify-data     the gate's texts (export-onnx, verify)
#   --s3-endpoint     the S3-compatible endpoint of s3:// URIs (every command that takes a URI)
#   --variant NAME    one variant (score); --variants A,B a list (bench)
# Old spellings stay for one release as hidden aliases that warn (deprecated_option, deprecated_positional).


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows an option's default once: appended only where the help text does not already say it,
    and never for flags, required options or options without a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or "%(default)" in text:
            return text
        if action.required or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # noqa: SLF001
            return text
        return text + " (default: %(default)s)"


class _Deprecated(argparse.Action):
    """An old spelling: stores like the new one and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:  # an optional positional that was not given
            return
        old = option_string or "the positional argument"
        print(f"{parser.prog}: warning: {old} is deprecated and goes in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated_option(parser: argparse.ArgumentParser, old: str, dest: str, new: str) -> None:
    """``old`` (e.g. ``--out``) kept as a hidden alias of ``new`` (``--output``), storing into ``dest``."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS)


def deprecated_positional(parser: argparse.ArgumentParser, dest: str, new: str, metavar: str) -> None:
    """A positional argument kept as a hidden alias of the option ``new``; resolve with :func:`one_of`."""
    parser.add_argument(f"_{dest}_positional", nargs="?", metavar=metavar, action=_Deprecated, new=f"{new} {metavar}",
                        default=None)


def one_of(args, dest: str, new: str, metavar: str, command: str) -> str:
    """The value of option ``dest`` or of its deprecated positional; exit 2 naming the option when neither."""
    value = getattr(args, dest, None) or getattr(args, f"_{dest}_positional", None)
    if value is None:
        print(f"docscore {command}: error: the following arguments are required: {new} {metavar}", file=sys.stderr)
        raise SystemExit(2)
    return value
