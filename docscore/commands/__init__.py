"""The CLI's subcommands, one module each (``register(subparsers, name)`` and ``run(args) -> int``)."""

from __future__ import annotations

import argparse


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
