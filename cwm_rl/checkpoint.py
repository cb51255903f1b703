"""Checkpoints written atomically and checked on load.

A checkpoint is one ``torch.save`` file holding the state and a small manifest (what it is, for which env, at
which step, with which library versions). It is written to a temporary file in the same directory, flushed to disk
and renamed over the old one, so a crash or a full disk never leaves a half-written checkpoint in its place.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cwm_rl.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, truncated or corrupt, or belongs to another env or model."""


def library_versions() -> dict[str, str]:
    """Versions recorded in every manifest."""
    import gymnasium
    import numpy

    from cwm_rl import __version__

    versions = {
        "cwm_rl": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
    }
    try:  # read from the installed metadata: the core package does not import SB3
        versions["stable_baselines3"] = importlib.metadata.version("stable-baselines3")
    except importlib.metadata.PackageNotFoundError:
        pass
    return versions


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], what: str = "file") -> Path:
    """Call ``write`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    On any failure the temporary file is removed and ``path`` is untouched; ``OSError`` (disk full, no permission)
    becomes a one-line :class:`CheckpointError`, other exceptions propagate (they are bugs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w+b") as f:  # readable too: zip writers may read back what they wrote
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write {what} {str(path)!r} ({e.strerror or e}); the previous file is intact"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), what)


def atomic_write_json(path: str | os.PathLike[str], data: Any, sort_keys: bool = False) -> Path:
    """:func:`atomic_write` of ``data`` as indented JSON with a trailing newline."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", "results")


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """Write ``{"manifest": manifest + versions, **payload}`` atomically (temp file, fsync, rename)."""
    data = {"manifest": {**manifest, "versions": library_versions()}, **payload}
    return atomic_write(path, lambda f: torch.save(data, f), "checkpoint")


def load_checkpoint(path: str | os.PathLike[str], expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; ``expect`` lists manifest entries that must match (e.g. ``env_id``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds on truncated or foreign files
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(e).__name__}); use an earlier checkpoint"
        ) from None
    if not isinstance(data, dict) or "manifest" not in data:
        raise CheckpointError(f"{str(path)!r} is not a cwm-rl checkpoint (no manifest)")
    manifest = data["manifest"]
    for key, want in (expect or {}).items():
        have = manifest.get(key)
        if have != want:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has {key}={have!r} but {want!r} was expected; use a checkpoint made for "
                f"{want!r}"
            )
    return data
