"""A short GIF of one deterministic episode of a trained agent (``cwm-rl eval RUN_DIR --render [PATH]``).

Seeing the policy play is the quickest sanity check of a learning curve. Frames come from the env's own
``render_mode="rgb_array"`` (every suite env supports it, without pygame); the episode is the first one of the
fixed evaluation protocol (same reset seed as :func:`cwm_rl.agents.evaluation.evaluate_agent`'s first episode)
and is capped at ``max_frames`` frames so long episodes (Pong: 1,000 steps) still give a small file. The GIF is
written with Pillow (a dependency of matplotlib) through :func:`cwm_rl.checkpoint.atomic_write`, so an
interrupted write never leaves a broken file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from cwm_rl.checkpoint import atomic_write
from cwm_rl.envs import spec_of
from cwm_rl.errors import InvalidArgumentError

from .evaluation import EVAL_SEED_OFFSET

MAX_FRAMES = 300
"""Default cap on frames per GIF (20 s of Pong at its 15 fps)."""


def check_gif_path(path: str | os.PathLike[str]) -> Path:
    """The GIF file to write, checked before any work is done: it must end in ``.gif`` and its folder must exist.

    Raises:
        InvalidArgumentError: one line saying what to change.
    """
    text = os.fspath(path)
    out = Path(text)
    if text.endswith(("/", os.sep)) or out.is_dir():
        raise InvalidArgumentError(f"--render {text}: give a file name ending in .gif, e.g. {out / 'episode.gif'}")
    if out.suffix.lower() != ".gif":
        raise InvalidArgumentError(f"--render {text}: the file name must end in .gif")
    if not out.parent.is_dir():
        raise InvalidArgumentError(
            f"--render {text}: the directory {str(out.parent)!r} does not exist; create it or choose another path"
        )
    return out


def episode_frames(
    agent: Any,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    max_frames: int = MAX_FRAMES,
) -> tuple[list[np.ndarray], float, bool, float]:
    """Frames of one deterministic episode of ``agent.predict``: the reset frame, then one per step.

    Returns:
        The frames ``(H, W, 3) uint8``, the return over the steps shown, whether the episode ended within
        ``max_frames`` frames, and the env's ``metadata["render_fps"]`` (15 if it names none).
    """
    if max_frames < 2:
        raise InvalidArgumentError(f"max_frames={max_frames} must be >= 2")
    env = gym.make(spec_of(env_id).id, render_mode="rgb_array", **dict(env_kwargs or {}))
    try:
        obs, _ = env.reset(seed=EVAL_SEED_OFFSET + seed)
        frames = [np.asarray(env.render(), dtype=np.uint8)]
        total, ended = 0.0, False
        while len(frames) < max_frames and not ended:
            action = np.asarray(agent.predict(np.asarray(obs)[None], deterministic=True))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            ended = bool(terminated or truncated)
            frames.append(np.asarray(env.render(), dtype=np.uint8))
        fps = float(env.metadata.get("render_fps") or 15)
    finally:
        env.close()
    return frames, total, ended, fps


def save_gif(frames: list[np.ndarray], path: str | os.PathLike[str], fps: float) -> Path:
    """Write ``frames`` as a looping GIF at ``fps`` frames per second, atomically."""
    from PIL import Image

    if not frames:
        raise InvalidArgumentError("no frames to write")
    # One shared palette (from the first frame) keeps colours steady across frames and the file small.
    first = Image.fromarray(frames[0]).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    rest = [Image.fromarray(f).quantize(palette=first, dither=Image.Dither.NONE) for f in frames[1:]]
    duration = max(20, int(round(1000.0 / max(fps, 1e-3))))  # ms per frame; browsers clamp shorter ones

    def write(f: Any) -> None:
        first.save(f, format="GIF", save_all=True, append_images=rest, duration=duration, loop=0, optimize=False)

    return atomic_write(path, write, "GIF")


def render_episode_gif(
    agent: Any,
    env_id: str,
    path: str | os.PathLike[str],
    env_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    max_frames: int = MAX_FRAMES,
    fps: float | None = None,
) -> dict[str, Any]:
    """Record one deterministic episode of ``agent`` on ``env_id`` and save it as a GIF at ``path``.

    Args:
        agent: anything with ``predict(obs_batch, deterministic=True)``.
        env_id: a registered env id with ``render_mode="rgb_array"``; ``env_kwargs`` its constructor arguments.
        path: the ``.gif`` file (its folder must exist, see :func:`check_gif_path`).
        seed: the run's seed: the episode is the first of the evaluation protocol.
        max_frames: cap on frames (the reset frame included).
        fps: playback speed; default the env's ``metadata["render_fps"]`` (else 15).

    Returns:
        ``path``, ``frames``, ``return`` (over the steps shown), ``episode_ended`` and ``fps``.
    """
    out = check_gif_path(path)
    frames, total, ended, env_fps = episode_frames(agent, env_id, env_kwargs, seed, max_frames)
    fps = env_fps if fps is None else float(fps)
    save_gif(frames, out, fps)
    return {"path": str(out), "frames": len(frames), "return": total, "episode_ended": ended, "fps": fps}


__all__ = ["MAX_FRAMES", "check_gif_path", "episode_frames", "render_episode_gif", "save_gif"]
