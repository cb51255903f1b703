"""Real transitions of a vectorised env, kept per sub-env in time order, served as fixed-length windows.

The world model trains on windows of consecutive transitions that never cross an episode boundary (an episode may
end at a window's last step). The buffer is FIFO with a hard cap, so a long run's memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "next_obs", "terminated", "local_graph")


class SequenceBuffer:
    """``capacity`` transitions at most (over all sub-envs); windows of ``window`` steps.

    Args:
        n_envs: sub-envs of the vector env that fills it.
        capacity: transitions kept in total; the oldest time steps are dropped first.
        window: transitions per training window.
    """

    def __init__(self, n_envs: int, capacity: int, window: int) -> None:
        self.n_envs = n_envs
        self.window = window
        self.max_steps = max(window, capacity // n_envs)  # time steps kept per sub-env
        self._data: dict[str, np.ndarray] = {}
        self._valid = np.zeros((0, n_envs), dtype=bool)  # a real transition (not an autoreset step)
        self._end = np.zeros((0, n_envs), dtype=bool)  # the episode ended with this transition

    def __len__(self) -> int:
        return int(self._valid.sum())

    def add(self, step: dict[str, np.ndarray], valid: np.ndarray, episode_end: np.ndarray) -> None:
        """Append one vector-env step: arrays ``(n_envs, ...)`` keyed by :data:`KEYS`."""
        row = {k: np.asarray(step[k])[None] for k in KEYS}
        if not self._data:
            self._data = row
        else:
            self._data = {k: np.concatenate([self._data[k], row[k]]) for k in KEYS}
        self._valid = np.concatenate([self._valid, np.asarray(valid, bool)[None]])
        self._end = np.concatenate([self._end, np.asarray(episode_end, bool)[None]])
        if len(self._valid) > 2 * self.max_steps:  # drop in halves: amortised O(1) per step
            cut = len(self._valid) - self.max_steps
            self._data = {k: v[cut:] for k, v in self._data.items()}
            self._valid, self._end = self._valid[cut:], self._end[cut:]

    def window_starts(self) -> np.ndarray:
        """``(k, 2)`` (time, env) pairs where a whole window of real, same-episode transitions starts."""
        w, t = self.window, len(self._valid)
        if t < w:
            return np.zeros((0, 2), dtype=np.int64)
        ok = self._valid.astype(np.int64)
        bad = (~self._valid | self._end).astype(np.int64)  # an end may only be a window's last step
        csum_ok = np.concatenate([np.zeros((1, self.n_envs), np.int64), np.cumsum(ok, 0)])
        csum_bad = np.concatenate([np.zeros((1, self.n_envs), np.int64), np.cumsum(bad, 0)])
        starts = np.arange(t - w + 1)
        all_valid = (csum_ok[starts + w] - csum_ok[starts]) == w
        no_inner_end = (csum_bad[starts + w - 1] - csum_bad[starts]) == 0
        return np.argwhere(all_valid & no_inner_end)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` random windows as tensors ``(batch, window, ...)``."""
        starts = self.window_starts()
        if len(starts) == 0:
            raise ValueError("the buffer holds no complete window yet")
        pick = starts[rng.integers(0, len(starts), size=batch_size)]
        times = pick[:, :1] + np.arange(self.window)[None]  # (batch, window)
        envs = np.repeat(pick[:, 1:], self.window, axis=1)
        out = {k: torch.as_tensor(self._data[k][times, envs]) for k in KEYS}
        out["reward"] = out["reward"].float()
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every real transition, flattened ``(n, ...)`` (for normalisation statistics)."""
        return {k: v[self._valid] for k, v in self._data.items()}
