"""SimPLe: PPO trained inside the learned world model (Kaiser et al., 2020, "Model-Based RL for Atari").

Loop (``learn``): act in the env's natively batched vector env with the current policy (PPO's stochastic policy;
uniformly random actions for the first ``seed_steps``), store real transitions (with their local graphs) in a
bounded :class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer`, and every ``train_every`` env steps refit the world
model (:class:`~cwm_rl.agents.world_model_learner.WorldModelLearner`, the one the MPC and Dyna agents use), then
train PPO for ``imagined_steps`` steps *in the model*: :class:`~cwm_rl.agents.imagined_env.ImaginedVecEnv` runs
``imagined_envs`` imagined episodes of ``horizon`` steps, each starting at a real observation from the buffer.
Real env steps only feed the world model; every policy gradient comes from imagined data, so the policy can take
many more steps than the env budget allows (here 100 imagined per real one).

Why this and not MPC or Dyna-DQN on Interventional Pong (docs/design_notes.md, "SimPLe"): even a perfect model
leaves the shipped MPC planner short of PPO's return (the planner's ceiling), and DQN on 5% real data learned
slowly. A policy trained on many imagined episodes reacts to the state, as PPO's does, and the world model's
short-range accuracy is what it needs.

Agent ids: ``causal-simple`` (slot SSM with sparse cross-attention) and ``mlp-simple`` (dense MLP, the control).
PPO's hyperparameters are ``agents/configs/ppo.yaml``'s (the model-free baseline's) with ``ppo_kwargs`` merged over
them; per-env defaults: ``agents/configs/simple.yaml``.

Checkpoint: one ``agent.pt`` (:func:`cwm_rl.checkpoint.save_checkpoint`, written atomically) holding the world
model's learner state and PPO's own zip as bytes, with a manifest (kind ``simple_agent``, env id, config, seed).
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO

from cwm_rl.checkpoint import load_checkpoint, save_checkpoint
from cwm_rl.config import ConfigError, apply_overrides, from_dict, to_dict
from cwm_rl.data import make_vector_env
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.world_model import SlotModelConfig

from .imagined_env import ImaginedVecEnv, restartable_state
from .model_based import REWARD_SOURCES, check_observations, env_defaults
from .sb3_baselines import _first_line, load_hyperparams, quiet_unlogged
from .sequence_buffer import SequenceBuffer
from .world_model_learner import (
    EnvLayout,
    LearnerViews,
    WorldModelLearner,
    check_loss_weights,
    vector_env_transitions,
)

SIMPLE_AGENTS = {"causal-simple": "slot-ssm", "mlp-simple": "mlp"}
"""Agent id -> world model kind (:mod:`cwm_rl.models.factory`). The slot Transformer's growing key/value cache
cannot restart one imagined episode at a time (:func:`~cwm_rl.agents.imagined_env.restartable_state`)."""

# PPO arguments the agent sets itself, and the key to use instead.
_RESERVED_PPO = {
    "n_envs": "simple.imagined_envs (PPO acts in that many imagined episodes)",
    "threads": "simple.threads",
}


@dataclass
class SimPLeConfig:
    """Everything the SimPLe agent depends on (``--set simple.KEY=VALUE`` addresses these keys).

    Attributes:
        model: world model kind; set from the agent id.
        n_envs: real sub-envs that collect data.
        seed_steps: real env steps with uniformly random actions before the first fit (the model's normaliser
            comes from them).
        train_every: real env steps between refits; PPO trains in the refitted model after each.
        first_updates: gradient steps of the first world-model fit; ``updates`` of every later one.
        buffer_size: real transitions kept (FIFO).
        window, batch_size, lr, sparsity_weight, dense_warmup, reset_every, reward_weight, prediction_loss: the
            world model's training, as the MPC agent's keys (:class:`~cwm_rl.agents.model_based.MPCConfig`).
        imagined_envs: imagined episodes PPO acts in side by side (its ``n_envs``).
        horizon: steps of an imagined episode before it is truncated (PPO bootstraps from its value there);
            SimPLe's short rollouts from real states keep the model's compounding error small.
        imagined_steps: PPO's env steps in the model after every refit.
        bounds_margin: an imagined episode is truncated where the model predicts a state outside the observation
            space's bounds widened by this fraction of their range (at that state clipped into them, the step's
            reward kept; :class:`~cwm_rl.agents.imagined_env.ImaginedVecEnv`): a model that has left the data it was
            fitted on says nothing about what follows, and a runaway state would overflow PPO's statistics.
        reward: how imagined steps are rewarded: ``model`` (the world model's reward and termination heads) or
            ``env`` (the env's reward function of the imagined observation, where it has one), as the MPC agent's.
        threads: torch CPU threads.
        slot: the slot models' architecture; ``mlp_hidden``/``mlp_layers`` the MLP's.
        ppo_kwargs: PPO hyperparameters merged over ``agents/configs/ppo.yaml``'s entry for the env (replaces the
            whole mapping when set with ``--set``).
    """

    model: str = "slot-ssm"
    n_envs: int = 8
    seed_steps: int = 2000
    train_every: int = 2000
    first_updates: int = 1500
    updates: int = 500
    buffer_size: int = 100_000
    window: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    sparsity_weight: float = 0.02
    dense_warmup: int = 0
    reset_every: int = 0
    reward_weight: float = 1.0
    prediction_loss: str = "mse"
    imagined_envs: int = 64
    horizon: int = 50
    imagined_steps: int = 100_000
    bounds_margin: float = 0.5
    reward: str = "model"
    threads: int = 1
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=32))
    mlp_hidden: int = 256
    mlp_layers: int = 3
    ppo_kwargs: dict[str, Any] = field(default_factory=dict)


def check_simple_config(cfg: SimPLeConfig) -> None:
    """One line per value that cannot work."""
    if cfg.model not in SIMPLE_AGENTS.values():
        raise ConfigError(f"model={cfg.model!r} is not one of {sorted(set(SIMPLE_AGENTS.values()))}")
    names = ("n_envs", "train_every", "first_updates", "window", "batch_size", "buffer_size", "threads")
    for name in (*names, "imagined_envs", "horizon", "imagined_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    for name in ("seed_steps", "updates", "reset_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be >= 0")
    if cfg.buffer_size < cfg.window * cfg.n_envs:
        raise ConfigError(f"buffer_size={cfg.buffer_size} must hold at least window * n_envs transitions")
    if cfg.reward not in REWARD_SOURCES:
        raise ConfigError(f"reward={cfg.reward!r} is not one of {', '.join(REWARD_SOURCES)}")
    if not cfg.bounds_margin >= 0:
        raise ConfigError(f"bounds_margin={cfg.bounds_margin} must be >= 0 (a large value turns the check off)")
    check_loss_weights(cfg)
    for key in cfg.ppo_kwargs:
        if key in _RESERVED_PPO:
            raise ConfigError(f"ppo_kwargs.{key} is set by the SimPLe agent; use {_RESERVED_PPO[key]} instead")


class SimPLeAgent(LearnerViews):
    """World model learned online + PPO trained in imagination (the agent protocol of :mod:`cwm_rl.agents.base`).

    Args:
        env_id: a registered causal env.
        config: the agent's config (default: :class:`SimPLeConfig`).
        seed: seeds the envs, the random seed actions, PPO (torch, numpy), the world model and the start states of
            imagined episodes; a CPU run is reproduced exactly.
        env_kwargs: env constructor arguments.
        log: optional ``callable(tag, value, step)`` for scalars (the training script passes TensorBoard's).
        tensorboard_log: folder for PPO's own TensorBoard events (its x axis counts imagined steps; ``None``: none).

    Attributes:
        ppo: the SB3 PPO model; it acts in imagined episodes, never in the real env.
        policy_rounds: PPO training rounds in the model so far (0: the policy is untrained and acts at random).
        imagined: imagined steps PPO has taken so far.
        episode_returns: returns of finished real training episodes, in order.
    """

    def __init__(
        self,
        env_id: str,
        config: SimPLeConfig | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        log: Callable[[str, float, int], None] | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = cfg = config or SimPLeConfig()
        check_simple_config(cfg)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidArgumentError(f"seed={seed!r} must be an integer")
        self.seed = int(seed)
        self.env_kwargs = dict(env_kwargs or {})
        self.log = log
        self.env, self.env_id = make_vector_env(env_id, cfg.n_envs, self.env_kwargs)
        if cfg.reward == "env" and not getattr(self.env.env, "has_observation_reward", False):
            raise ConfigError(
                f"reward=env: {self.env_id} has no reward function of the observation "
                "(CausalEnv.reward_from_observation); use reward=model"
            )
        self.action_space = self.env.single_action_space
        self.layout = EnvLayout.of(self.env, self.env_id)
        self.learner = WorldModelLearner(self.layout, cfg, seed=self.seed, env_kwargs=self.env_kwargs, log=self._emit)
        restartable_state(self.learner.model, 1)  # refuse a model that cannot restart one imagined episode
        self.buffer = SequenceBuffer(cfg.n_envs, cfg.buffer_size, cfg.window)
        self.action_space.seed(self.seed)
        self.env.action_space.seed(self.seed)
        self._start_rng = np.random.default_rng([self.seed, 2])  # start states of imagined episodes
        self.ppo_hyperparams = self._ppo_hyperparams()
        self.tensorboard_log = None if tensorboard_log is None else os.fspath(tensorboard_log)
        self.ppo = self._new_ppo()
        self.policy_rounds = 0
        self.imagined = 0
        self.num_timesteps = 0
        self._since_fit = 0
        self._obs: np.ndarray | None = None
        self._ep_return = np.zeros(cfg.n_envs)
        self.episode_returns: list[float] = []

    def _ppo_hyperparams(self) -> dict[str, Any]:
        """ppo.yaml's entry for the env < ``ppo_kwargs`` (checked as the PPO baseline's); ``n_envs``/``threads``
        are the agent's own."""
        resolved = load_hyperparams("ppo", self.env_id, dict(self.config.ppo_kwargs))
        return {k: v for k, v in resolved.items() if k not in _RESERVED_PPO}

    def _imagined_env(self) -> ImaginedVecEnv:
        """Imagined episodes in the current world model, starting at real observations of the buffer."""
        cfg = self.config
        reward_fn = self.env.env.reward_from_observation if cfg.reward == "env" else None
        return ImaginedVecEnv(
            self.learner.model,
            self.learner.norm,
            self.env.single_observation_space,
            self.action_space,
            self.buffer.sample_obs,
            cfg.imagined_envs,
            cfg.horizon,
            rng=self._start_rng,
            reward_fn=reward_fn,
            bounds_margin=cfg.bounds_margin,
        )

    def _new_ppo(self) -> PPO:
        kwargs = dict(self.ppo_hyperparams)
        policy = kwargs.pop("policy")
        try:
            return PPO(
                policy,
                self._imagined_env(),
                seed=self.seed,
                device="cpu",
                tensorboard_log=self.tensorboard_log,
                verbose=0,
                **kwargs,
            )
        except (AssertionError, ValueError, TypeError) as e:
            raise ConfigError(f"ppo rejected its hyperparameters on {self.env_id}: {_first_line(e)}") from None

    # ------------------------------------------------------------------ acting
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The policy's actions for each row of ``obs (n, obs_dim)``; random actions before its first training."""
        obs = check_observations(obs, sum(self.layout.slot_dims), self.env_id)
        if self.policy_rounds == 0:
            return np.stack([self.action_space.sample() for _ in range(len(obs))])
        with torch.no_grad():
            action, _ = self.ppo.predict(obs, deterministic=deterministic)
        return np.asarray(action)

    # ------------------------------------------------------------------ learning
    def learn(self, total_env_steps: int, callback: Callable[[SimPLeAgent], bool] | None = None) -> SimPLeAgent:
        """Interact for ``total_env_steps`` more real env steps (summed over sub-envs).

        ``callback(agent)`` runs after every vector step; returning False stops early.
        """
        if isinstance(total_env_steps, bool) or not isinstance(total_env_steps, (int, np.integer)):
            raise InvalidArgumentError(f"total_env_steps={total_env_steps!r} must be a positive integer")
        if total_env_steps < 1:
            raise InvalidArgumentError(f"total_env_steps={total_env_steps} must be a positive integer")
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        target = self.num_timesteps + int(total_env_steps)
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.seed)
        while self.num_timesteps < target:
            if self.num_timesteps < cfg.seed_steps or self.policy_rounds == 0:
                action = self.env.action_space.sample()
            else:
                action = self.predict(np.asarray(self._obs, dtype=np.float32), deterministic=False)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            record = (self._obs, action, reward, next_obs, terminated, truncated, info)
            step, valid, ended = vector_env_transitions(*record)
            self.buffer.add(step, valid, ended)
            self._ep_return += np.where(valid, reward, 0.0)
            for i in np.flatnonzero(ended):
                self.episode_returns.append(float(self._ep_return[i]))
                self._emit("rollout/episode_return", float(self._ep_return[i]))
                self._ep_return[i] = 0.0
            n_new = int(valid.sum())
            self.num_timesteps += n_new
            self._since_fit += n_new
            self._obs = next_obs
            due = not self.model_ready or self._since_fit >= cfg.train_every
            if self.num_timesteps >= cfg.seed_steps and due and self.buffer.window_starts().shape[0] > 0:
                self.learner.reset_if_due(self.num_timesteps, cfg.reset_every)
                self.fit_world_model(cfg.updates if self.model_ready else cfg.first_updates)
                self.train_policy(cfg.imagined_steps)
            if callback is not None and callback(self) is False:
                break
        return self

    def fit_world_model(self, updates: int) -> dict[str, float]:
        """``updates`` gradient steps of the world model on windows of real data; returns the mean loss parts."""
        means = self.learner.fit(self.buffer, updates)
        self._since_fit = 0
        return means

    def train_policy(self, steps: int) -> None:
        """PPO for ``steps`` imagined env steps in the current world model, every imagined episode started afresh
        (the model has changed since the last round)."""
        if not self.model_ready:
            raise RuntimeError("the world model is not fitted yet: nothing to imagine in")
        start = time.perf_counter()
        env = self._imagined_env()
        self.ppo.set_env(env, force_reset=True)
        quiet_unlogged(self.ppo)
        self.ppo.learn(int(steps), reset_num_timesteps=False, tb_log_name="simple_ppo")
        self.policy_rounds += 1
        self.imagined += env.steps
        self._emit("simple/imagined_steps", float(env.steps))
        # the share of imagined episodes the model ended by running out of bounds: high means PPO trains on stubs
        self._emit("simple/invalid_episode_frac", env.invalid / max(1, env.episodes))
        self._emit("simple/policy_seconds", time.perf_counter() - start)

    def world_model_metrics(self, transitions: int = 1000, horizons: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
        """The world model judged on fresh random-policy transitions (:meth:`WorldModelLearner.metrics`), the same
        protocol as the MPC agent's. Empty before the model is first fitted."""
        return self.learner.metrics(transitions, horizons)

    def _emit(self, tag: str, value: float) -> None:
        if self.log is not None:
            self.log(tag, value, self.num_timesteps)

    # ------------------------------------------------------------------ persistence
    def _ppo_zip(self) -> bytes:
        zipped = io.BytesIO()
        self.ppo.save(zipped)
        return zipped.getvalue()

    def _load_ppo(self, zipped: bytes) -> None:
        self.ppo = PPO.load(io.BytesIO(zipped), env=None, device="cpu", tensorboard_log=self.tensorboard_log)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled whole for an exact resume (:mod:`cwm_rl.agents.snapshot`), PPO the SB3 way (its zip) and its
        action space's random generator (SB3 reseeds it on load); the imagined env is rebuilt every round."""
        state = {k: v for k, v in super().__getstate__().items() if k != "ppo"}
        state["_ppo"] = {"zip": self._ppo_zip(), "action_rng": self.ppo.action_space.np_random.bit_generator.state}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ppo = state.pop("_ppo")
        self.__dict__.update(state)
        self._load_ppo(ppo["zip"])
        self.ppo.action_space.np_random.bit_generator.state = ppo["action_rng"]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """The world model, its normaliser and optimiser, PPO's zip and the config in one file, written atomically."""
        payload = {
            **self.learner.state(),
            "ppo_zip": self._ppo_zip(),
            "num_timesteps": self.num_timesteps,
            "policy_rounds": self.policy_rounds,
        }
        manifest = {
            "kind": "simple_agent",
            "env_id": self.env_id,
            "model": self.config.model,
            "config": to_dict(self.config),
            "seed": self.seed,
            "env_kwargs": self.env_kwargs,
            "step": self.num_timesteps,
        }
        return save_checkpoint(path, payload, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str], env_id: str | None = None) -> SimPLeAgent:
        """Rebuild a saved agent (policy, world model, normaliser) with fresh envs; ``env_id`` must match if given.

        Raises:
            CheckpointError: missing, corrupt or foreign file, or an agent of another env.
        """
        expect = {"kind": "simple_agent", **({"env_id": env_id} if env_id else {})}
        data = load_checkpoint(path, expect=expect)
        manifest = data["manifest"]
        cfg = from_dict(SimPLeConfig, manifest["config"], where=str(path))
        agent = cls(manifest["env_id"], cfg, seed=manifest["seed"], env_kwargs=manifest.get("env_kwargs"))
        agent.learner.load_state(data)
        agent._load_ppo(data["ppo_zip"])
        agent.num_timesteps = int(data["num_timesteps"])
        agent.policy_rounds = int(data["policy_rounds"])
        return agent

    def close(self) -> None:
        """Close the training envs."""
        self.env.close()

    def __repr__(self) -> str:
        steps = self.num_timesteps
        return f"SimPLeAgent({self.env_id!r}, model={self.config.model!r}, seed={self.seed}, num_timesteps={steps})"


# ------------------------------------------------------------------------------------------------ config

CONFIG_FILE = Path(__file__).resolve().parent / "configs" / "simple.yaml"


def simple_config_for(
    agent_id: str = "causal-simple", overrides: dict[str, Any] | None = None, env_id: str | None = None
) -> SimPLeConfig:
    """The config of a SimPLe agent id: :class:`SimPLeConfig` < the env's defaults (``simple.yaml``) <
    ``overrides``."""
    if agent_id not in SIMPLE_AGENTS:
        raise InvalidArgumentError(f"unknown SimPLe agent {agent_id!r}; choose one of {sorted(SIMPLE_AGENTS)}")
    cfg = dataclasses.replace(SimPLeConfig(), model=SIMPLE_AGENTS[agent_id])
    cfg = apply_overrides(cfg, env_defaults(env_id, CONFIG_FILE, "SimPLe config file"), where=str(CONFIG_FILE))
    return apply_overrides(cfg, overrides or {})


__all__ = ["SIMPLE_AGENTS", "SimPLeAgent", "SimPLeConfig", "check_simple_config", "simple_config_for"]
