"""The model-based agent: a world model learned online, used for MPC with imagined rollouts.

Loop (``learn``): act in the env's natively batched vector env, store real transitions (with their local graphs)
in a bounded :class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer`, (re)train the world model on a schedule (the
model, its optimiser, normaliser and fitting recipe live in
:class:`~cwm_rl.agents.world_model_learner.WorldModelLearner`, shared with the Dyna agent), and pick actions by
planning: a planner of :mod:`cwm_rl.planning` proposes action sequences and
:class:`~cwm_rl.planning.imagination.Imagination` scores them with the model's recurrent ``step``.

Agent ids and their world models: ``causal-mpc`` (slot SSM with sparse cross-attention), ``transformer-mpc``
(the equivalent slot Transformer), ``mlp-mpc`` (dense MLP, no graph).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cwm_rl.checkpoint import load_checkpoint, save_checkpoint
from cwm_rl.config import ConfigError, apply_overrides, env_table_key, from_dict, load_env_table, to_dict
from cwm_rl.data import make_vector_env
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.attention import edge_mode
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.planning import PlannerConfig, make_planner, validate_config
from cwm_rl.planning.imagination import Imagination

from .sequence_buffer import SequenceBuffer
from .value import ValueFunction
from .world_model_learner import (
    EnvLayout,
    LearnerViews,
    WorldModelLearner,
    check_loss_weights,
    vector_env_transitions,
)

REWARD_SOURCES = ("model", "env")
"""How the MPC agents score imagined steps (``MPCConfig.reward``)."""

MPC_AGENTS = {"causal-mpc": "slot-ssm", "transformer-mpc": "slot-transformer", "mlp-mpc": "mlp"}
"""Agent id -> world model kind (:mod:`cwm_rl.models.factory`)."""


@dataclass
class MPCConfig:
    """Everything the model-based agent depends on (``--set`` addresses these keys).

    Attributes:
        model: world model kind; set from the agent id.
        n_envs: sub-envs of the training vector env.
        seed_steps: env steps with uniformly random actions before the first model fit.
        train_every: env steps between world-model refits.
        first_updates: gradient steps of the first fit; ``updates`` of every later one.
        buffer_size: real transitions kept (FIFO), so memory stays bounded in long runs.
        window, batch_size, lr, sparsity_weight, reward_weight, prediction_loss: world-model training (as in
            ``cwm-rl wm-train``; ``reward_weight`` scales the reward head's squared error, in the env's raw reward
            units; ``prediction_loss`` is ``mse`` or ``l1``); ``dense_warmup``: the first world-model updates run
            with every cross-slot gate open and no sparsity penalty (``cwm-rl wm-train``'s key), counted across
            fits. Gates that close during the first fit close on the seed steps alone: on Pusher2D (random play,
            contacts in about 1% of the steps) they kept ``box <- agent`` shut through the agent's later,
            contact-rich data (docs/design_notes.md, "Pusher2D, session 17"). Either set it above
            ``first_updates``, or let ``reset_every`` refit the model later (a reset counts the warm-up afresh):
            Pusher2D's defaults do the latter, which worked better (sessions 18-19).
        reset_every: at the first scheduled fit ``reset_every`` or more env steps after a model's first fit,
            re-initialise the world model and refit it from scratch on the whole buffer with ``first_updates`` (and
            ``dense_warmup`` afresh): :meth:`~cwm_rl.agents.world_model_learner.WorldModelLearner.reset`. 0
            (default): never. Fits fall where the vector env's step count crosses ``train_every`` (it moves by up
            to ``n_envs`` a step), so a reset due at the last step of a run may fall just after it.
        discount: discount of imagined rewards.
        threads: torch CPU threads (1 is fastest for the small batched steps of planning on 2 cores).
        planner: the MPC planner (``auto``: categorical CEM for discrete actions, CEM for continuous).
        slot: the slot models' architecture; ``mlp_hidden``/``mlp_layers`` the MLP's.
        value: also learn a state value by TD(0) on the real transitions (:mod:`cwm_rl.agents.value`, fitted with
            the world model, as many updates) and add ``discount**H * V(s_H)`` to each imagined return, so the
            planner sees past its horizon (TD-MPC style). Off by default until it is measured to help.
        reward: how imagined steps are scored: ``model`` (default), the world model's reward and termination heads;
            ``env``, the env's own reward function of the observation reached
            (:meth:`~cwm_rl.envs.CausalEnv.reward_from_observation`, where the env has one: Pusher2D), applied to
            the imagined observations, so the model supplies only the dynamics. ``env`` gives the agent knowledge a
            model-free learner must learn from samples (mbrl-lib's PETS plans with such known reward functions);
            report it with any comparison.
        imagination_mask: gate interactions in imagination with the model's learned local graph (edges at or below
            the threshold carry nothing; :func:`cwm_rl.models.attention.edge_mode` ``"learned"``); false lets every
            edge carry information in proportion to its score (``"soft"``). For the default hard-gated slot model
            true is how it was trained to run; models without a graph ignore it.
    """

    model: str = "slot-ssm"
    n_envs: int = 8
    seed_steps: int = 2000
    train_every: int = 1000
    first_updates: int = 600
    updates: int = 150
    buffer_size: int = 100_000
    window: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    sparsity_weight: float = 0.02
    dense_warmup: int = 0
    reset_every: int = 0
    reward_weight: float = 1.0
    prediction_loss: str = "mse"
    discount: float = 0.99
    threads: int = 1
    planner: PlannerConfig = field(default_factory=lambda: PlannerConfig(name="auto"))
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=32))
    mlp_hidden: int = 256
    mlp_layers: int = 3
    value: bool = False
    reward: str = "model"
    imagination_mask: bool = True


def check_mpc_config(cfg: MPCConfig) -> None:
    """One line per value that cannot work."""
    if cfg.model not in MPC_AGENTS.values():
        raise ConfigError(f"model={cfg.model!r} is not one of {sorted(set(MPC_AGENTS.values()))}")
    for name in ("n_envs", "train_every", "first_updates", "window", "batch_size", "buffer_size", "threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    for name in ("seed_steps", "updates", "reset_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be >= 0")
    if cfg.buffer_size < cfg.window * cfg.n_envs:
        raise ConfigError(f"buffer_size={cfg.buffer_size} must hold at least window * n_envs transitions")
    if not (0.0 < cfg.discount <= 1.0):
        raise ConfigError(f"discount={cfg.discount} must be in (0, 1]")
    if cfg.reward not in REWARD_SOURCES:
        raise ConfigError(f"reward={cfg.reward!r} is not one of {', '.join(REWARD_SOURCES)}")
    check_loss_weights(cfg)
    validate_config(cfg.planner)


def check_observations(obs: Any, obs_dim: int, env_id: str) -> np.ndarray:
    """``obs`` as a float32 ``(n, obs_dim)`` array, or one line saying what is wrong with it."""
    obs = np.asarray(obs, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise InvalidArgumentError(f"observations must have shape (n, {obs_dim}) for {env_id}, got {obs.shape}")
    if not np.isfinite(obs).all():
        raise InvalidArgumentError("observations contain NaN or inf; check the env or the wrapper feeding them")
    return obs


class MPCAgent(LearnerViews):
    """Model-based agent: online world model + MPC (the agent protocol of :mod:`cwm_rl.agents.base`).

    Args:
        env_id: a registered causal env.
        config: the agent's config (default: :class:`MPCConfig`).
        seed: seeds the envs, the random seed actions, the planner and torch; a CPU run is reproduced exactly.
        env_kwargs: env constructor arguments.
        log: optional ``callable(tag, value, step)`` for scalars (the training script passes TensorBoard's).
    """

    def __init__(
        self,
        env_id: str,
        config: MPCConfig | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        log: Callable[[str, float, int], None] | None = None,
    ) -> None:
        self.config = cfg = config or MPCConfig()
        check_mpc_config(cfg)
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
        layout = EnvLayout.of(self.env, self.env_id)
        self.slot_names = layout.slot_names
        self.slot_dims = list(layout.slot_dims)
        self.action_spec = layout.action_spec
        self.action_start = layout.action_start
        # The learner owns the world model's torch random stream (initialisation, batches): the global one is left
        # as it was, so two agents in one process, or an evaluation in between, never change each other's runs.
        self.learner = WorldModelLearner(layout, cfg, seed=self.seed, env_kwargs=self.env_kwargs, log=self._emit)
        self.value = ValueFunction(sum(self.slot_dims), discount=cfg.discount, seed=self.seed) if cfg.value else None
        self._value_rng = np.random.default_rng([self.seed, 1])
        self.buffer = SequenceBuffer(cfg.n_envs, cfg.buffer_size, cfg.window)
        self.action_space.seed(self.seed)
        self.env.action_space.seed(self.seed)
        self._planners: dict[int, Any] = {}
        self._train_planner = make_planner(self.action_space, cfg.planner, cfg.n_envs, seed=self.seed)
        self.num_timesteps = 0
        self._since_fit = 0
        self._obs: np.ndarray | None = None
        self._ep_return = np.zeros(cfg.n_envs)
        self.episode_returns: list[float] = []

    # ------------------------------------------------------------------ acting

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Plan from each row of ``obs (n, obs_dim)``; random actions while the model is untrained."""
        obs = check_observations(obs, sum(self.slot_dims), self.env_id)
        if not self.model_ready:
            return np.stack([self.action_space.sample() for _ in range(len(obs))])
        return self._plan(obs, self._planner(len(obs)))

    @property
    def _reward_fn(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        """The env's reward function of the observation for imagination (``reward=env``), else None."""
        if self.config.reward != "env":
            return None
        return self.env.env.reward_from_observation

    def _plan(self, obs: np.ndarray, planner: Any) -> np.ndarray:
        torch.set_num_threads(self.config.threads)
        value = self.value
        terminal = (lambda x: value(x, self.norm)) if value is not None and value.updates else None
        imagination = Imagination(
            self.model, self.norm, self.config.discount, terminal_value=terminal, reward_fn=self._reward_fn
        )
        with edge_mode(self.model, "learned" if self.config.imagination_mask else "soft"):
            return planner.plan(lambda actions: imagination.returns(obs, actions))

    def start_evaluation(self, n_envs: int) -> None:
        """Start the evaluation planner for ``n_envs`` afresh, seeded as when first made and with no warm start
        (:func:`~cwm_rl.agents.evaluation.evaluate_agent` calls this before an evaluation's first step). An
        evaluation then depends only on the model and the evaluation envs: a reloaded agent scores what the
        training script's evaluation of it scored, and evaluating twice gives the same number twice."""
        self._planners.pop(n_envs, None)

    def _planner(self, batch: int) -> Any:
        """The planner for outside callers (evaluation) with ``batch`` envs; training has its own, so evaluation
        never disturbs the training envs' warm starts or the planner's random stream."""
        if batch not in self._planners:
            self._planners[batch] = make_planner(self.action_space, self.config.planner, batch, seed=self.seed + batch)
        return self._planners[batch]

    # ------------------------------------------------------------------ learning
    def learn(self, total_env_steps: int, callback: Callable[[MPCAgent], bool] | None = None) -> MPCAgent:
        """Interact for ``total_env_steps`` more real env steps (summed over sub-envs).

        ``callback(agent)`` runs after every vector step; returning False stops early.
        """
        if total_env_steps < 1:
            raise InvalidArgumentError(f"total_env_steps={total_env_steps} must be a positive integer")
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        target = self.num_timesteps + int(total_env_steps)
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.seed)
        while self.num_timesteps < target:
            if self.num_timesteps < cfg.seed_steps or not self.model_ready:
                action = self.env.action_space.sample()
            else:
                action = self._plan(np.asarray(self._obs, dtype=np.float32), self._train_planner)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            record = (self._obs, action, reward, next_obs, terminated, truncated, info)
            step, valid, ended = vector_env_transitions(*record)
            self.buffer.add(step, valid, ended)
            self._ep_return += np.where(valid, reward, 0.0)
            for i in np.flatnonzero(ended):
                self.episode_returns.append(float(self._ep_return[i]))
                self._emit("rollout/episode_return", float(self._ep_return[i]))
                self._ep_return[i] = 0.0
            if ended.any():
                self._train_planner.reset(ended)
            n_new = int(valid.sum())
            self.num_timesteps += n_new
            self._since_fit += n_new
            self._obs = next_obs
            if self.num_timesteps >= cfg.seed_steps and (not self.model_ready or self._since_fit >= cfg.train_every):
                if self.buffer.window_starts().shape[0] > 0:
                    self.learner.reset_if_due(self.num_timesteps, cfg.reset_every)
                    self.fit_world_model(cfg.updates if self.model_ready else cfg.first_updates)
            if callback is not None and callback(self) is False:
                break
        return self

    def fit_world_model(self, updates: int) -> dict[str, float]:
        """``updates`` gradient steps on windows from the buffer; returns the mean loss parts."""
        means = self.learner.fit(self.buffer, updates)
        if self.value is not None:
            td = self.value.fit(self.buffer, self.norm, updates, self.config.batch_size, self._value_rng)
            self._emit("value/td_error", td)
            means["value_td_error"] = td
        self._since_fit = 0
        return means

    def world_model_metrics(self, transitions: int = 1000, horizons: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
        """The world model judged on fresh real transitions (random actions, unseen seeds): prediction error at
        1/5/10 open-loop steps and local-graph SHD/F1/AUROC against the env's ``info["local_graph"]``
        (:meth:`WorldModelLearner.metrics`). Empty before the model is first fitted."""
        return self.learner.metrics(transitions, horizons)

    def _emit(self, tag: str, value: float) -> None:
        if self.log is not None:
            self.log(tag, value, self.num_timesteps)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Weights, normaliser, optimiser and config in one file, written atomically."""
        payload = {**self.learner.state(), "num_timesteps": self.num_timesteps}
        if self.value is not None:
            payload["value"] = self.value.state()
        manifest = {
            "kind": "mpc_agent",
            "env_id": self.env_id,
            "model": self.config.model,
            "config": to_dict(self.config),
            "seed": self.seed,
            "env_kwargs": self.env_kwargs,
            "step": self.num_timesteps,
        }
        return save_checkpoint(path, payload, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str], env_id: str | None = None) -> MPCAgent:
        """Rebuild a saved agent (its world model and normaliser); ``env_id`` must match if given."""
        expect = {"kind": "mpc_agent", **({"env_id": env_id} if env_id else {})}
        data = load_checkpoint(path, expect=expect)
        manifest = data["manifest"]
        cfg = from_dict(MPCConfig, manifest["config"], where=str(path))
        agent = cls(manifest["env_id"], cfg, seed=manifest["seed"], env_kwargs=manifest.get("env_kwargs"))
        agent.learner.load_state(data)
        if agent.value is not None:
            agent.value.load_state(data["value"])
        agent.num_timesteps = int(data["num_timesteps"])
        return agent


CONFIG_FILE = Path(__file__).resolve().parent / "configs" / "mpc.yaml"


def env_defaults(
    env_id: str | None, config_file: str | os.PathLike[str] = CONFIG_FILE, what: str = "MPC config file"
) -> dict[str, Any]:
    """Dotted-key defaults for ``env_id`` from a per-env agent table (``agents/configs/mpc.yaml`` unless
    ``config_file`` is given): ``default`` < the env's entry; an ``-OOD`` id uses its base id's entry."""
    table = load_env_table(config_file, what)
    key = env_table_key(table, env_id) if env_id else None
    return {**table["default"], **(table[key] if key else {})}


def mpc_config_for(agent_id: str, overrides: dict[str, Any] | None = None, env_id: str | None = None) -> MPCConfig:
    """The config of an MPC agent id: :class:`MPCConfig` < the env's defaults (``mpc.yaml``) < ``overrides``."""
    if agent_id not in MPC_AGENTS:
        raise InvalidArgumentError(f"unknown MPC agent {agent_id!r}; choose one of {sorted(MPC_AGENTS)}")
    cfg = dataclasses.replace(MPCConfig(), model=MPC_AGENTS[agent_id])
    cfg = apply_overrides(cfg, env_defaults(env_id), where=str(CONFIG_FILE))
    return apply_overrides(cfg, overrides or {})


__all__ = [
    "MPC_AGENTS",
    "MPCAgent",
    "MPCConfig",
    "check_mpc_config",
    "check_observations",
    "env_defaults",
    "mpc_config_for",
]
