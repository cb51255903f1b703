"""World-model evaluation inside any RL loop: a probe world model for model-free agents, and imagined vs real return.

A model-free baseline has no world model, yet the question "when would a causal world model trained on this
agent's own experience become good, and how does that track the return?" applies to it as much as to the
model-based agent. :class:`WorldModelProbeCallback` answers it for any Stable-Baselines3 algorithm: it records the
real transitions the agent experiences in its vectorised training env (with the env's ``info["local_graph"]``) with
the Dyna agent's :func:`~cwm_rl.agents.world_model_learner.sb3_transitions`, keeps them in the same
:class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer` the model-based agents use, and fits a probe slot-SSM world
model on them on a cheap schedule with the model-based agents' own
:class:`~cwm_rl.agents.world_model_learner.WorldModelLearner` (a smaller model and batch: :class:`ProbeConfig`). The
probe never influences the agent (it only reads ``self.locals``, and its learner has its own torch and numpy random
streams), so a baseline trains exactly as it would without it.

Its numbers come from :meth:`WorldModelLearner.metrics <cwm_rl.agents.world_model_learner.WorldModelLearner.metrics>`,
the model-based agents' ``world_model_metrics`` protocol (fresh random-policy transitions,
:func:`cwm_rl.wm_evaluation.evaluate_windows`), so the ``wm_*`` curves of a baseline and of a model-based agent are
comparable.

:func:`imagined_vs_real_return` measures what a planner or a Dyna learner relies on: from real start states, the
return the model predicts for the current policy (the policy acting on imagined observations) against the return
the real env gives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from cwm_rl.data import make_vector_env
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.world_model import SlotModelConfig, consuming_step
from cwm_rl.wm_evaluation import Normalizer

from .base import torch_threads
from .sequence_buffer import SequenceBuffer
from .world_model_learner import EVAL_HORIZONS, EnvLayout, WorldModelLearner, sb3_transitions

RETURN_SEED_OFFSET = 3_000_000
"""Start states of :func:`imagined_vs_real_return` in the training script (fixed per run, so every evaluation
compares the model on the same starts)."""


@dataclass
class ProbeConfig:
    """The probe's schedule and model; the defaults keep its cost small next to a PPO run.

    Measured on Interventional Pong (PPO at its shipped hyperparameters, 50k env steps, an evaluation every 5k,
    one torch thread, a shared 2-core machine): PPO alone took 13-17 s; recording and fitting the probe took
    about 1.6 s (~11%), and judging it at the 10 evaluations (``wm_*`` metrics and imagined vs real return) about
    1.5 s more (~10%; the same protocol a model-based agent pays, proportional to the number of evaluations).
    At that budget (about 80 gradient steps in 50k env steps) the probe is compute-limited: its graph F1 stays low
    early in a run and rises over long runs. Raise ``updates`` (or lower ``train_every``) for a stronger probe at
    a higher cost (for scale: ``cwm-rl wm-train``'s slot SSM reaches graph F1 0.9 on Pong after 3,000 steps).

    Attributes:
        model: world-model kind of :mod:`cwm_rl.models.factory` (``slot-ssm``: the main model, with a graph).
        slot: the slot model's architecture (``d_model`` 16, half the model-based agent's, for cost);
            ``mlp_hidden``/``mlp_layers`` the MLP's (``model: mlp``).
        seed_steps: real transitions collected before the first fit (its normaliser statistics come from them).
        first_updates: gradient steps of the first fit; ``updates`` of every later one.
        train_every: real transitions between fits.
        buffer_size: transitions kept (FIFO), so memory stays bounded in long runs.
        window, lr, sparsity_weight, dense_warmup, reward_weight, prediction_loss: world-model training, as the
            model-based agent's defaults.
        batch_size: windows per gradient step (16, half the model-based agent's: per second of CPU, small batches
            of a small model learned the Pong graph fastest in a quick sweep).
        threads: torch CPU threads while fitting and judging (1 is fastest for these small batches; the caller's
            setting is restored afterwards).

    The world-model keys (``model``, ``slot``, ``mlp_hidden``, ``mlp_layers``, ``lr``, ``batch_size``,
    ``sparsity_weight``, ``dense_warmup``, ``reward_weight``, ``prediction_loss``) are those of
    :class:`~cwm_rl.agents.world_model_learner.LearnerConfig`.
    """

    model: str = "slot-ssm"
    seed_steps: int = 2000
    first_updates: int = 30
    updates: int = 5
    train_every: int = 5000
    buffer_size: int = 50_000
    window: int = 16
    batch_size: int = 16
    lr: float = 1e-3
    sparsity_weight: float = 0.02
    dense_warmup: int = 0
    reward_weight: float = 1.0
    prediction_loss: str = "mse"
    threads: int = 1
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=16))
    mlp_hidden: int = 256
    mlp_layers: int = 3


def check_probe_config(cfg: ProbeConfig) -> None:
    """One line per value that cannot work."""
    positive = ("first_updates", "train_every", "buffer_size", "window", "batch_size", "threads")
    for name in (*positive, "mlp_hidden", "mlp_layers"):
        if getattr(cfg, name) < 1:
            raise InvalidArgumentError(f"probe {name}={getattr(cfg, name)} must be a positive integer")
    for name in ("seed_steps", "updates", "dense_warmup"):
        if getattr(cfg, name) < 0:
            raise InvalidArgumentError(f"probe {name}={getattr(cfg, name)} must be >= 0")
    if not cfg.lr > 0:
        raise InvalidArgumentError(f"probe lr={cfg.lr} must be > 0")


# ------------------------------------------------------------------------------------------- imagined vs real


def _action_tensor(actions: Any, discrete: bool, n: int) -> torch.Tensor:
    a = np.asarray(actions)
    if discrete:
        return torch.as_tensor(a.reshape(n).astype(np.int64))
    return torch.as_tensor(a.reshape(n, -1).astype(np.float32))


def imagined_vs_real_return(
    model: nn.Module,
    norm: Normalizer,
    policy_fn: Callable[[np.ndarray], Any],
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    horizon: int = 10,
    starts: int = 8,
    seed: int = 0,
    burn_in: int = 0,
    discount: float = 1.0,
) -> dict[str, float]:
    """The return a world model predicts for a policy, against the return the real env gives it.

    ``starts`` sub-envs of the env's batched vector env are reset with seeds ``seed, seed + 1, ...``; the policy
    acts for ``burn_in`` real steps (so the starts are not only initial states), then from each real state it is
    rolled ``horizon`` steps twice: in the real env, and in the model (the policy acting on the model's own
    imagined observations, through the model's recurrent ``step``, as :mod:`cwm_rl.planning.imagination` does).

    Both returns stop at the episode's end: the real one at the real termination or truncation, the imagined one
    weighted by the predicted probability that the episode is still running (as planners score it) and cut at the
    real truncation (a time limit is not dynamics). Starts whose episode ended exactly at the end of the burn-in
    are left out (their next real step would be a reset). Torch's global random stream is left as it was.

    Args:
        model: a world model of :mod:`cwm_rl.models` (``initial_state``/``step``).
        norm: the normaliser it was trained with.
        policy_fn: ``obs (n, obs_dim) float32 -> actions (n, ...)``, e.g.
            ``lambda obs: agent.predict(obs, deterministic=True)`` for any agent.
        env_id: a registered causal env id; ``env_kwargs`` its constructor arguments.
        horizon: steps compared.
        starts: start states (sub-envs).
        seed: seed of the first sub-env's reset.
        burn_in: real policy steps before the comparison starts.
        discount: discount of both returns (1: plain sums of rewards).

    Returns:
        ``imagined_return`` and ``real_return`` (means over starts), ``return_gap`` (imagined minus real, the
        model's bias) and ``return_abs_error`` (mean absolute per-start difference).
    """
    for name, value, low in (("horizon", horizon, 1), ("starts", starts, 1), ("burn_in", burn_in, 0)):
        if int(value) < low:
            raise InvalidArgumentError(f"{name}={value} must be >= {low}")
    with torch.random.fork_rng(devices=[]):
        start_obs, real, before_cut, use, discrete = _real_rollout(
            policy_fn, env_id, env_kwargs, int(horizon), int(starts), int(seed), int(burn_in), discount
        )
        imagined = _imagined_rollout(model, norm, policy_fn, start_obs, before_cut, discrete, discount)
    imagined, real = imagined[use], real[use]
    return {
        "imagined_return": float(imagined.mean()),
        "real_return": float(real.mean()),
        "return_gap": float(imagined.mean() - real.mean()),
        "return_abs_error": float(np.abs(imagined - real).mean()),
    }


def _real_rollout(
    policy_fn: Callable[[np.ndarray], Any],
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    horizon: int,
    starts: int,
    seed: int,
    burn_in: int,
    discount: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The real half of :func:`imagined_vs_real_return`: start observations ``(starts, obs_dim)``, real returns
    ``(starts,)``, ``before_cut (horizon, starts)`` (step h comes before a real time limit), the starts to use
    and whether actions are discrete."""
    venv, _ = make_vector_env(env_id, starts, dict(env_kwargs or {}))
    try:
        discrete = isinstance(venv.single_action_space, spaces.Discrete)
        obs, _ = venv.reset(seed=seed)
        just_ended = np.zeros(starts, dtype=bool)
        for _ in range(burn_in):
            obs, _, terminated, truncated, info = venv.step(policy_fn(np.asarray(obs, dtype=np.float32)))
            just_ended = np.asarray(info["_local_graph"], bool) & (terminated | truncated)
        use = ~just_ended if (~just_ended).any() else np.ones(starts, dtype=bool)
        start_obs = np.asarray(obs, dtype=np.float32).copy()
        real = np.zeros(starts)
        window_open = np.ones(starts, dtype=bool)  # before the real episode's end (termination or truncation)
        cut = np.zeros(starts, dtype=bool)  # the real episode hit its time limit
        before_cut = np.ones((horizon, starts), dtype=bool)
        for h in range(horizon):
            before_cut[h] = ~cut
            obs, reward, terminated, truncated, _ = venv.step(policy_fn(np.asarray(obs, dtype=np.float32)))
            real += np.where(window_open, discount**h * np.asarray(reward, dtype=np.float64), 0.0)
            cut |= truncated & ~terminated & window_open
            window_open &= ~(terminated | truncated)
    finally:
        venv.close()
    return start_obs, real, before_cut, use, discrete


@torch.no_grad()
def _imagined_rollout(
    model: nn.Module,
    norm: Normalizer,
    policy_fn: Callable[[np.ndarray], Any],
    start_obs: np.ndarray,
    before_cut: np.ndarray,
    discrete: bool,
    discount: float,
) -> np.ndarray:
    """The imagined half: the policy acts on the model's predictions from ``start_obs``; returns ``(starts,)``."""
    was_training = model.training
    model.eval()
    starts = start_obs.shape[0]
    x = torch.as_tensor(start_obs)
    state = model.initial_state(starts)
    running = torch.ones(starts)  # probability that no termination was predicted before this step
    imagined = torch.zeros(starts, dtype=torch.float64)
    for h in range(before_cut.shape[0]):
        seen = np.nan_to_num(x.numpy()).astype(np.float32)  # a diverged model must not crash the policy
        action = _action_tensor(policy_fn(seen), discrete, starts)
        pred, state = consuming_step(model)(state, norm.obs(x), norm.action(action))
        weight = running * torch.as_tensor(before_cut[h], dtype=torch.float32) * discount**h
        imagined += (pred.reward * weight).double()
        running = running * (1.0 - torch.sigmoid(pred.termination_logit))
        x = x + norm.unnormalize_delta(pred.delta)
    model.train(was_training)
    return imagined.numpy()


# ------------------------------------------------------------------------------------------------ the callback


class WorldModelProbeCallback(BaseCallback):
    """Fit a probe world model on the real transitions an SB3 agent experiences; judge it like the model-based
    agent's world model.

    Add it to ``model.learn(callback=...)`` (or ``SB3Agent.learn``) of any SB3 algorithm (PPO, A2C, DQN, SAC)
    whose training env is a vector env of a cwm_rl causal env. After every vector step it stores, per sub-env,
    ``(obs, action, reward, next_obs, terminated, local_graph)`` as
    :func:`~cwm_rl.agents.world_model_learner.sb3_transitions` reads them: ``obs`` is the algorithm's ``_last_obs``
    (the observation the action was chosen from), ``next_obs`` the true next observation
    (``info["terminal_observation"]`` when the sub-env was reset), ``terminated`` excludes time-limit truncations,
    and steps whose ``info`` carries no ``"local_graph"`` are skipped. Every ``train_every`` transitions it takes a
    few gradient steps of its :class:`~cwm_rl.agents.world_model_learner.WorldModelLearner` (:class:`ProbeConfig`).
    It never changes what the agent does or samples.

    Args:
        env_id: the causal env the agent trains on; ``env_kwargs`` its constructor arguments.
        config: schedule and model (default: :class:`ProbeConfig`).
        seed: seeds the probe's model, its batch sampling and its evaluation data.
        log: optional ``callable(tag, value, step)`` for the fit losses (the training script passes TensorBoard's),
            tagged ``world_model/<part>`` as the model-based agent's.

    Attributes:
        learner: the probe's world-model learner; ``world_model``, ``optim``, ``norm`` and ``model_updates`` are
            its model, optimiser, normaliser (None before the first fit, when :attr:`ready` is False) and gradient
            steps. (``model`` is SB3's: the algorithm the callback is attached to.)
        buffer: the stored transitions (None before training starts).
        fits, fit_seconds: how many fits it has done and the wall time they took.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        config: ProbeConfig | None = None,
        seed: int = 0,
        log: Callable[[str, float, int], None] | None = None,
    ) -> None:
        super().__init__(verbose=0)
        self.config = cfg = config or ProbeConfig()
        check_probe_config(cfg)
        self.env_kwargs = dict(env_kwargs or {})
        self.layout = EnvLayout.for_env(env_id, self.env_kwargs)
        self.probe_seed = int(seed)
        self.log = log
        self.learner = WorldModelLearner(
            self.layout, cfg, seed=self.probe_seed, env_kwargs=self.env_kwargs, log=self._emit
        )
        self.buffer: SequenceBuffer | None = None
        self._since_fit = 0
        self.transitions_seen = 0
        self.fits = 0
        self.fit_seconds = 0.0

    @property
    def world_model(self) -> nn.Module:
        """The probe world model."""
        return self.learner.model

    @property
    def optim(self) -> torch.optim.Optimizer:
        """Its optimiser."""
        return self.learner.optim

    @property
    def norm(self) -> Normalizer | None:
        """Its normaliser (None before the first fit)."""
        return self.learner.norm

    @property
    def model_updates(self) -> int:
        """Gradient steps taken so far."""
        return self.learner.model_updates

    @property
    def ready(self) -> bool:
        """True once the probe has been fitted (its metrics exist)."""
        return self.learner.ready

    def _emit(self, tag: str, value: float) -> None:
        if self.log is not None:
            self.log(tag, value, int(self.num_timesteps))

    def __getstate__(self) -> dict[str, Any]:
        """Pickles for an exact resume (:mod:`cwm_rl.agents.snapshot`) without what SB3 attaches while training
        (the algorithm, the collection loop's frames) or the ``log`` sink; ``init_callback`` attaches them again."""
        drop = ("model", "locals", "globals")
        return {**{k: v for k, v in self.__dict__.items() if k not in drop}, "log": None}

    def _init_callback(self) -> None:
        n_envs = self.training_env.num_envs
        if self.buffer is None or self.buffer.n_envs != n_envs:
            self.buffer = SequenceBuffer(n_envs, self.config.buffer_size, self.config.window)

    def _on_step(self) -> bool:
        cfg = self.config
        self.record(self.model._last_obs, self.locals)
        due = not self.ready or self._since_fit >= cfg.train_every
        if due and self.transitions_seen >= cfg.seed_steps and self.buffer.window_starts().shape[0] > 0:
            self.fit(cfg.updates if self.ready else cfg.first_updates)
        return True

    def record(self, last_obs: Any, local_vars: dict[str, Any]) -> int:
        """Store one vector step from an SB3 ``collect_rollouts`` frame; returns the transitions stored."""
        step, valid, ended = sb3_transitions(last_obs, local_vars, self.layout)
        if self.buffer is None:
            self.buffer = SequenceBuffer(len(valid), self.config.buffer_size, self.config.window)
        self.buffer.add(step, valid, ended)
        stored = int(valid.sum())
        self.transitions_seen += stored
        self._since_fit += stored
        return stored

    def fit(self, updates: int) -> dict[str, float]:
        """``updates`` gradient steps on the stored windows (the first call fixes the normaliser from the data so
        far); returns the mean loss parts. Uses the learner's own torch and numpy random streams."""
        assert self.buffer is not None
        start = time.perf_counter()
        with torch_threads(self.config.threads):
            parts = self.learner.fit(self.buffer, updates)
        self.fits += 1
        self._since_fit = 0
        self.fit_seconds += time.perf_counter() - start
        return parts

    def metrics(self, transitions: int = 1000, horizons: Sequence[int] = EVAL_HORIZONS) -> dict[str, float]:
        """The probe judged on fresh random-policy transitions (:meth:`WorldModelLearner.metrics`, the model-based
        agents' protocol); empty before the first fit. Torch's global random stream is left as it was."""
        with torch_threads(self.config.threads), torch.random.fork_rng(devices=[]):
            return self.learner.metrics(transitions, horizons)


__all__ = [
    "RETURN_SEED_OFFSET",
    "ProbeConfig",
    "WorldModelProbeCallback",
    "check_probe_config",
    "imagined_vs_real_return",
]
