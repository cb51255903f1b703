"""Real transitions of a vectorised env, kept per sub-env in time order, served as fixed-length windows.

The world model trains on windows of consecutive transitions that never cross an episode boundary (an episode may
end at a window's last step). The buffer is FIFO with a hard cap, so a long run's memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "next_obs", "terminated", "local_graph", "intervened")


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
        # Storage for 2 * max_steps time steps, filled in order; when it is full the newest max_steps are moved to
        # the front: one copy every max_steps adds, so adding is amortised O(1).
        self._data: dict[str, np.ndarray] = {}
        self._valid = np.zeros((2 * self.max_steps, n_envs), dtype=bool)  # a real transition, not an autoreset
        self._end = np.zeros((2 * self.max_steps, n_envs), dtype=bool)  # the episode ended with this transition
        self._t = 0  # time steps stored
        self._starts: np.ndarray | None = None  # window_starts(), cached until the next add

    def __len__(self) -> int:
        return int(self._valid[: self._t].sum())

    def add(self, step: dict[str, np.ndarray], valid: np.ndarray, episode_end: np.ndarray) -> None:
        """Append one vector-env step: arrays ``(n_envs, ...)`` keyed by :data:`KEYS`."""
        if not self._data:
            self._data = {
                k: np.zeros((len(self._valid), *np.shape(step[k])), dtype=np.asarray(step[k]).dtype) for k in KEYS
            }
        if self._t == len(self._valid):  # full: keep the newest max_steps
            keep = slice(self._t - self.max_steps, self._t)
            for arr in (*self._data.values(), self._valid, self._end):
                arr[: self.max_steps] = arr[keep]
            self._t = self.max_steps
        for k in KEYS:
            self._data[k][self._t] = step[k]
        self._valid[self._t] = valid
        self._end[self._t] = episode_end
        self._t += 1
        self._starts = None

    def window_starts(self) -> np.ndarray:
        """``(k, 2)`` (time, env) pairs where a whole window of real, same-episode transitions starts."""
        if self._starts is not None:
            return self._starts
        w, t = self.window, self._t
        if t < w:
            return np.zeros((0, 2), dtype=np.int64)
        valid, end = self._valid[:t], self._end[:t]
        bad = (~valid | end).astype(np.int64)  # an end may only be a window's last step
        csum_ok = np.concatenate([np.zeros((1, self.n_envs), np.int64), np.cumsum(valid, 0)])
        csum_bad = np.concatenate([np.zeros((1, self.n_envs), np.int64), np.cumsum(bad, 0)])
        starts = np.arange(t - w + 1)
        all_valid = (csum_ok[starts + w] - csum_ok[starts]) == w
        no_inner_end = (csum_bad[starts + w - 1] - csum_bad[starts]) == 0
        self._starts = np.argwhere(all_valid & no_inner_end)
        return self._starts

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

    def sample_obs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` observations of stored real transitions, drawn uniformly with replacement (start states of imagined
        episodes)."""
        rows = np.argwhere(self._valid[: self._t])
        if len(rows) == 0:
            raise ValueError("the buffer holds no real transition yet")
        pick = rows[rng.integers(0, len(rows), size=n)]
        return np.array(self._data["obs"][pick[:, 0], pick[:, 1]], dtype=np.float32)

    def dataset_arrays(self) -> dict[str, np.ndarray]:
        """Every real transition as the rows of a transition dataset (docs/data_format.md): sub-env by sub-env, in
        time order, with ``truncated`` (an episode's end that was not a termination), ``episode`` ids counting up
        at every end and every new sub-env, and ``env_index``. The FIFO drops the oldest time steps, so the first
        episode of a sub-env may begin mid-way; its rows are still a real trajectory."""
        t = self._t
        keys = (*KEYS, "truncated", "env_index")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        starts: list[np.ndarray] = []
        for env in range(self.n_envs):
            rows = np.flatnonzero(self._valid[:t, env])
            for k in KEYS:
                parts[k].append(self._data[k][rows, env])
            end = self._end[rows, env]
            parts["truncated"].append(end & ~self._data["terminated"][rows, env])
            parts["env_index"].append(np.full(len(rows), env, dtype=np.int32))
            new = np.zeros(len(rows), dtype=bool)
            new[:1] = True
            new[1:] = end[:-1]  # a row after an end opens the next episode
            starts.append(new)
        out = {k: np.concatenate(v) for k, v in parts.items()}
        out["episode"] = (np.cumsum(np.concatenate(starts)) - 1).astype(np.int32)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every real transition, flattened ``(n, ...)`` (for normalisation statistics)."""
        return {k: v[: self._t][self._valid[: self._t]] for k, v in self._data.items()}
