"""Agents: the model-based agent and the Stable-Baselines3 baselines, behind one protocol (:class:`Agent`)."""

from cwm_rl.agents.base import Agent
from cwm_rl.agents.sb3_baselines import SB3_ALGOS, SB3Agent, algos_for, load_hyperparams, read_manifest

__all__ = ["SB3_ALGOS", "Agent", "SB3Agent", "algos_for", "load_hyperparams", "read_manifest"]
