"""Exact resume: the whole training state of a ``cwm-rl train`` run in one file, ``RUN_DIR/resume.pt``.

A run killed at any moment (SIGKILL included) continues with ``cwm-rl train --resume RUN_DIR`` from its last
snapshot and ends with the same ``metrics.json`` as an uninterrupted run with the same seed on CPU (wall times
aside). That needs *everything* the rest of the run depends on, not only the weights: the agent as a whole (world
model, optimiser, replay buffers, planners' warm starts and random generators, the training envs mid-episode with
their random generators, episode counters), the global random streams of torch, numpy and Python (SB3 samples
actions and batches from them), and the training script's own state (the evaluation curve, the next evaluation
step, the elapsed wall time, an SB3 baseline's probe world model).

So the agent is pickled whole (``torch.save``): listing fields by hand is how one gets forgotten. Objects that
hold something unpicklable say what to leave out (a TensorBoard logger, SB3 callback frames) through
``__getstate__``; an SB3 model is stored the SB3 way (its own zip, its env and its replay buffer). The file is
written atomically (:func:`cwm_rl.checkpoint.save_checkpoint`) with a manifest (step, env id, agent, config hash,
library versions) that :func:`load_snapshot` checks, so a snapshot of another run, or of an edited
``config.yaml``, is refused with one line.

When a snapshot is exact: the model-based agents and ``random`` after any env step; an SB3 agent (and the Dyna
agent, which runs SB3's loop) only where SB3 starts a rollout, because SB3's loop keeps state in local variables
mid-rollout. The training script takes its snapshots at those *safe points* (:class:`~cwm_rl.agents.training`).
Snapshots are trusted files of your own runs (they are unpickled); the manifest check runs first.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cwm_rl.checkpoint import CheckpointError, library_versions, load_checkpoint, save_checkpoint

SNAPSHOT_NAME = "resume.pt"
"""File name of the snapshot in a run directory."""

KIND = "train_resume"


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a resolved run config (a plain dict), recorded in the snapshot's manifest."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def global_rng_state() -> dict[str, Any]:
    """The global random streams: torch (CPU), numpy's legacy ``np.random`` and Python's ``random``."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_snapshot(
    path: str | os.PathLike[str],
    agent: Any,
    trainer_state: dict[str, Any],
    *,
    env_id: str,
    agent_id: str,
    config: dict[str, Any],
    step: int,
    model: str | None = None,
) -> Path:
    """Write the snapshot atomically: the agent object, the training script's state and the global random
    streams, under a manifest (``model``: the world-model kind, for agents that have one). A failed write (disk
    full) leaves the previous snapshot intact."""
    payload = {"agent": agent, "trainer": trainer_state, "rng": global_rng_state()}
    manifest = {"kind": KIND, "env_id": env_id, "agent": agent_id, "model": model, "step": step}
    manifest["config_hash"] = config_hash(config)
    return save_checkpoint(path, payload, manifest)


def load_snapshot(
    path: str | os.PathLike[str],
    *,
    env_id: str,
    agent_id: str,
    config: dict[str, Any],
    written: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a snapshot of the run whose resolved config is ``config``; returns ``{"manifest", "agent", "trainer",
    "rng"}``. The caller restores the global random streams (``set_global_rng_state(data["rng"])``) last, after
    anything that reseeds them.

    ``written``, the run's ``config.yaml`` as it is on disk, is accepted too: a run written before a config key
    existed lacks that key there, while ``config`` (resolved with today's defaults) has it, and each new key's
    default keeps the old behaviour. An edited ``config.yaml`` matches neither.

    Raises:
        CheckpointError: missing, truncated or corrupt file, or a snapshot of another env, agent or config.
    """
    data = load_checkpoint(path, expect={"kind": KIND, "env_id": env_id, "agent": agent_id})
    recorded = data["manifest"].get("config_hash")
    if recorded != config_hash(config) and (written is None or recorded != config_hash(written)):
        raise CheckpointError(
            f"{str(path)!r} was written for a different config.yaml (was it edited?); restore the run's original "
            "config.yaml, or start a new run with --config"
        )
    return data


def version_drift(manifest: dict[str, Any]) -> list[str]:
    """Libraries whose version differs from the one the snapshot was written with (an exact continuation is only
    promised with the same versions)."""
    now, then = library_versions(), manifest.get("versions", {})
    return [f"{k} {then.get(k)} -> {v}" for k, v in now.items() if then.get(k) != v]


__all__ = [
    "SNAPSHOT_NAME",
    "config_hash",
    "global_rng_state",
    "load_snapshot",
    "save_snapshot",
    "set_global_rng_state",
    "version_drift",
]
