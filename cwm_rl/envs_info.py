"""Descriptions of registered causal envs, for ``cwm-rl envs`` and the docs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from cwm_rl.causal import format_graph
from cwm_rl.envs import CausalEnv, causal_env_ids


def describe_env(env_id: str) -> dict[str, Any]:
    """Slots, spaces, global graph and defaults of one registered env (constructed once, not stepped)."""
    env = gym.make(env_id)
    causal = env.unwrapped
    if not isinstance(causal, CausalEnv):
        env.close()
        raise TypeError(f"{env_id} is not a CausalEnv")
    spec = gym.spec(env_id)
    info = {
        "id": env_id,
        "class": type(causal).__name__,
        "slots": {name: sl.stop - sl.start for name, sl in causal.slot_slices.items()},
        "observation_dim": int(causal.observation_space.shape[0]),
        "action_space": repr(causal.action_space),
        "max_episode_steps": spec.max_episode_steps,
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.kwargs.items()},
        "causal_graph": np.asarray(causal.causal_graph).astype(int).tolist(),
        "vectorized": spec.vector_entry_point is not None,
    }
    env.close()
    return info


def describe_envs(namespace: str | None = "cwm") -> list[dict[str, Any]]:
    """:func:`describe_env` for every registered causal env in ``namespace`` (other envs are skipped)."""
    out = []
    for env_id in causal_env_ids(namespace):
        try:
            out.append(describe_env(env_id))
        except TypeError:
            continue
    return out


def format_env_table(infos: list[dict[str, Any]], with_graphs: bool = True) -> str:
    """Text listing: one header line per env (slots, action space, horizon), then its global graph."""
    lines = []
    for info in infos:
        slots = ", ".join(f"{k}[{v}]" for k, v in info["slots"].items())
        lines.append(f"{info['id']}  ({info['class']}, {info['max_episode_steps']} steps, {info['action_space']})")
        lines.append(f"  slots: {slots}")
        if with_graphs:
            graph = np.array(info["causal_graph"], dtype=bool)
            lines.append("  global causal graph (row = child at t+1, column = parent at t):")
            lines.extend("    " + line for line in format_graph(graph, list(info["slots"])).splitlines())
            lines.append("")
    return "\n".join(lines)
