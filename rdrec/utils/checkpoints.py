"""Load checkpoint files without letting them run code.

A ``.ckpt``/``.pt`` file is a pickle: loaded with ``torch.load(weights_only=False)`` it can run any code it
carries. Every checkpoint rdrec reads (a run being resumed, the best checkpoint of a run, an SR run or a DELRec
stage-1 run a user points at) goes through ``load_checkpoint``: ``weights_only=True`` (tensors, numbers, strings,
lists, dicts, tuples), which is all rdrec's own checkpoints hold. A file that needs more is refused with one line;
the explicit opt-in for a file you trust is the environment variable ``RDREC_TRUST_CHECKPOINTS=1``.
A truncated or corrupt file is reported as such, in one line naming it.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rdrec.errors import DataError

TRUST_ENV = "RDREC_TRUST_CHECKPOINTS"


def trusted() -> bool:
    """True when the user opted in to full unpickling (``RDREC_TRUST_CHECKPOINTS=1``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` of ``path`` restricted to plain data; a ``DataError`` naming the file if it is refused,
    truncated or corrupt."""
    path = Path(path)
    weights_only = not trusted()
    try:
        return torch.load(path, map_location=map_location, mmap=mmap, weights_only=weights_only)
    except FileNotFoundError:
        raise DataError(path=path, expected="a checkpoint file", got="no such file") from None
    except pickle.UnpicklingError as err:
        what = _first_global(str(err))
        if weights_only and what:  # a reference to code; anything else the restricted unpickler rejects is damage
            raise DataError(path=path, expected="a checkpoint of tensors and plain values",
                            got=f"a pickle that calls {what}",
                            message=f"refused: loading it could run code (set {TRUST_ENV}=1 only for a file you "
                                    "trust)") from None
        raise _corrupt(path, None) from None  # (torch's text here is advice to unpickle it unrestricted)
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError) as err:
        raise _corrupt(path, err) from None


def _corrupt(path: Path, err: BaseException | None) -> DataError:
    first = "" if err is None else (str(err).strip().splitlines() or [type(err).__name__])[0]
    return DataError(path=path, expected="a readable torch checkpoint",
                     got="a truncated or corrupt file" + (f" ({first[:60]})" if first else ""))


def _first_global(message: str) -> str:
    # torch's message names the offending global, e.g. "Unsupported global: GLOBAL builtins.exec was not an allowed
    # global by default" or "Unsupported operand 82"; keep only that name
    for line in message.splitlines():
        if "Unsupported global:" in line:
            return line.split("Unsupported global:", 1)[1].split(" was not")[0].strip().removeprefix("GLOBAL ")
    return ""


def training_done(checkpoint: dict, max_epochs: int | None, max_steps: int = -1) -> bool:
    """True when a Lightning checkpoint was written after its run's last optimiser step: Lightning's own stopping
    rule (``FitLoop.done``: the epochs processed reached ``max_epochs``, or ``max_steps`` was reached), read from the
    checkpoint's loop state. A run resumed from it only tests. Conservative: a checkpoint written at a validation's
    end (before Lightning counts the epoch as processed) or before an early stop reads as not done."""
    try:
        epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        steps = checkpoint["global_step"]
    except (KeyError, TypeError):
        return False
    return (max_steps is not None and max_steps >= 0 and steps >= max_steps) or (
        isinstance(max_epochs, int) and max_epochs >= 0 and epochs >= max_epochs)


def without_optimizer_moments(checkpoint: dict) -> dict:
    """``checkpoint`` with each optimiser's per-parameter state (Adam's moments: twice the trained weights) emptied
    and its parameter groups kept: still a checkpoint Lightning resumes from, exact when no optimiser step follows
    (``training_done``)."""
    slim = dict(checkpoint)
    slim["optimizer_states"] = [{**opt, "state": {}} for opt in checkpoint.get("optimizer_states", [])]
    return slim


def best_model_path(trainer) -> str:
    """The path of ``trainer``'s best checkpoint ("" when none was kept). A resumed run restores Lightning's
    ``best_model_path`` as it was written, absolute; when the run directory has moved since (an archive unpacked in
    another checkout, a renamed run) that path is gone, and the file of the same name in the run's own checkpoint
    directory is the one meant."""
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    if best and not Path(best).exists() and getattr(callback, "dirpath", None):
        here = Path(callback.dirpath) / Path(best).name
        if here.exists():
            return str(here)
    return best
