"""Where a run keeps its resume state, how ``last`` is found, and how the final checkpoint is published.

``OUTPUT/_training/checkpoint-N/`` are the ``Trainer``'s own checkpoints (weights, optimizer, scheduler, RNG
states, ``trainer_state.json`` with the data position). The ``Trainer`` writes ``trainer_state.json`` after every
other file of a checkpoint, so a folder whose ``trainer_state.json`` parses is complete; one killed half-way is not,
and is removed before a resumed run starts. The finished docscore checkpoint replaces ``OUTPUT`` whole, without
``_training/``: export never sees the optimizer state or the pickles the ``Trainer`` writes there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from docscore.errors import ConfigError

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The global step of a complete ``checkpoint-N`` folder, else ``None``."""
    match = _CHECKPOINT.match(path.name)
    if not match or not path.is_dir():
        return None
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("global_step") != int(match.group(1)) or not (path / "model.safetensors").is_file():
        return None
    return int(match.group(1))


def checkpoints(training_dir: Path) -> tuple[list[Path], list[Path]]:
    """``(complete, incomplete)`` checkpoint folders under ``training_dir``, complete ones oldest first."""
    if not training_dir.is_dir():
        return [], []
    complete, incomplete = [], []
    for p in training_dir.iterdir():
        if _CHECKPOINT.match(p.name):
            (complete if checkpoint_step(p) is not None else incomplete).append(p)
    return sorted(complete, key=checkpoint_step), incomplete


def resolve_resume(requested: str | None, training_dir: Path) -> str | None:
    """The checkpoint folder to resume from, or ``None`` for a fresh start.

    Raises:
        ConfigError: a path that is not a complete checkpoint, or a fresh start over a run's checkpoints.
    """
    complete, _ = checkpoints(training_dir)
    if requested is None:
        if complete:
            raise ConfigError(
                f"{training_dir} holds checkpoints of an unfinished run (newest: {complete[-1].name}): pass "
                "--resume-from-checkpoint last to continue it, or delete that folder to start over")
        return None
    if requested == "last":
        if not complete:
            log.info("no complete checkpoint under %s: training starts from scratch", training_dir)
            return None
        return str(complete[-1])
    path = Path(requested)
    if checkpoint_step(path) is None:
        raise ConfigError(f"--resume-from-checkpoint {requested}: not a complete training checkpoint (a "
                          f"checkpoint-N folder with trainer_state.json); pass `last` or one of "
                          f"{[p.name for p in complete] or 'none found'} under {training_dir}")
    return str(path)


def remove_incomplete(training_dir: Path) -> None:
    """Delete checkpoint folders a kill left half-written (they would confuse rotation and ``last``)."""
    for p in checkpoints(training_dir)[1]:
        log.warning("removing incomplete checkpoint %s (the run was stopped while writing it)", p)
        shutil.rmtree(p, ignore_errors=True)


def publish(output: Path, write: Callable[[Path], None]) -> Path:
    """Build the final checkpoint beside ``output`` and put it in place of ``output`` (and its ``_training/``).

    ``write(target)`` builds the complete checkpoint at ``target``. ``output`` then changes by two renames, so a
    reader never sees a partial checkpoint there; a kill between them leaves both trees in a hidden sibling
    ``.NAME.publish-*`` (nothing is lost, but ``output`` is missing until rerun).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.publish-", dir=output.parent))
    try:
        target = staging / "checkpoint"
        write(target)
        previous = staging / "previous"
        if output.exists():
            os.replace(output, previous)
        os.replace(target, output)
    except BaseException:
        if not output.exists() and (staging / "previous").exists():
            os.replace(staging / "previous", output)  # put the run's state back
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
