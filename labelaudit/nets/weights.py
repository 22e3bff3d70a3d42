"""Reading a weights file: a state_dict saved with ``torch.save``, never code."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import ConfigError


def load_weights_only(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings: on a file that
    is not ours (an old pickle protocol, say) they precede the one-line error the caller gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str) -> dict:
    """A local weights file as a state_dict (parameter name -> tensor), read with ``weights_only=True``.

    Raises ConfigError with one line saying what the file holds instead: not a torch.save file,
    a pickled object (e.g. a whole model, which cannot be loaded without running its code), a
    single tensor, or a dict whose values are not tensors (e.g. a training checkpoint).
    """
    fix = "save the weights with torch.save(model.state_dict(), 'weights.pth') and pass that file"
    if Path(path).is_dir():
        raise ConfigError(
            f"weights file {path!r} is a folder; pass the .pt/.pth file inside it that holds the "
            "state_dict, or a torchvision weight name"
        )
    if not Path(path).is_file():
        raise ConfigError(
            f"weights file {path!r} does not exist; pass a torchvision weight name or a .pt state_dict"
        )
    try:
        state = load_weights_only(path)
    except Exception as exc:  # the weights-only unpickler fails on arbitrary bytes with arbitrary errors
        if isinstance(exc, OSError):
            raise ConfigError(
                f"weights file {path!r} cannot be read ({exc.strerror or exc}); check its permissions"
            ) from None
        if isinstance(exc, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            # torch.save's zip format, but the pickle inside needs classes beyond tensors; torch's own
            # message advises weights_only=False, which would run the file's code.
            raise ConfigError(
                f"weights file {path!r} holds pickled Python objects (e.g. a whole model), not a plain "
                f"state_dict of tensors, and is not loaded because that could run code; {fix}"
            ) from None
        raise ConfigError(f"weights file {path!r} is not a file written by torch.save; {fix}") from None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        held = type(state).__name__
        if isinstance(state, dict):
            held = f"dict with keys {list(state)[:4]} whose values are not all tensors (a checkpoint?)"
        raise ConfigError(
            f"weights file {path!r} holds a {held}, not a state_dict (parameter name -> tensor); {fix}"
        )
    return state
