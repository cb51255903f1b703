"""Checkpoints written atomically and checked on load.

A checkpoint is one ``torch.save`` file holding the state and a small manifest (what it is, for which env, at
which step, with which library versions). It is written to a temporary file in the same directory, flushed to disk
and renamed over the old one, so a crash or a full disk never leaves a half-written checkpoint in its place.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from cwm_rl.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, truncated or corrupt, or belongs to another env or model."""


def library_versions() -> dict[str, str]:
    """Versions recorded in every manifest."""
    import gymnasium
    import numpy

    from cwm_rl import __version__

    return {
        "cwm_rl": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any], manifest: dict[str, Any]) -> Path:
    """Write ``{"manifest": manifest + versions, **payload}`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = {"manifest": {**manifest, "versions": library_versions()}, **payload}
    try:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {str(path)!r} ({e.strerror or e}); the previous one is intact"
        ) from None
    return path


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
