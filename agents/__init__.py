"""Agents: the model-based agents (MPC, Dyna, SimPLe) and the Stable-Baselines3 baselines behind one protocol
(:class:`Agent`), and the training script's Python API (``make_agent``, ``train``, ``resume``, ``evaluate_agent``,
``compare_runs``)."""

from cwm_rl.agents.base import Agent
from cwm_rl.agents.compare import compare_runs, evaluate_run, load_agent
from cwm_rl.agents.dyna import DYNA_AGENTS, DynaAgent, DynaConfig, dyna_config_for
from cwm_rl.agents.evaluation import evaluate_agent
from cwm_rl.agents.model_based import MPC_AGENTS, MPCAgent, MPCConfig, mpc_config_for
from cwm_rl.agents.random_agent import RandomAgent
from cwm_rl.agents.sb3_baselines import SB3_ALGOS, SB3Agent, algos_for, load_hyperparams, read_manifest
from cwm_rl.agents.simple import SIMPLE_AGENTS, SimPLeAgent, SimPLeConfig, simple_config_for
from cwm_rl.agents.training import AGENTS, TrainConfig, make_agent, resolve_config, resume, train

__all__ = [
    "AGENTS",
    "DYNA_AGENTS",
    "MPC_AGENTS",
    "SB3_ALGOS",
    "SIMPLE_AGENTS",
    "Agent",
    "DynaAgent",
    "DynaConfig",
    "MPCAgent",
    "MPCConfig",
    "RandomAgent",
    "SB3Agent",
    "SimPLeAgent",
    "SimPLeConfig",
    "TrainConfig",
    "algos_for",
    "compare_runs",
    "dyna_config_for",
    "evaluate_agent",
    "evaluate_run",
    "load_agent",
    "load_hyperparams",
    "make_agent",
    "mpc_config_for",
    "read_manifest",
    "resolve_config",
    "resume",
    "simple_config_for",
    "train",
]
