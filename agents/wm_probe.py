"""World-model evaluation inside any RL loop: a probe world model for model-free agents, and imagined vs real return.

A model-free baseline has no world model, yet the question "when would a causal world model trained on this
agent's own experience become good, and how does that track the return?" applies to it as much as to the
model-based agent. :class:`WorldModelProbeCallback` answers it for any Stable-Baselines3 algorithm: it records the
real transitions the agent experiences in its vectorised training env (with the env's ``info["local_graph"]``),
keeps them in the same :class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer` the model-based agent uses, and fits a
probe slot-SSM world model on them on a cheap schedule, with the same loss
(:func:`cwm_rl.wm_training.world_model_loss`). The probe never influences the agent (it only reads ``self.locals``
and has its own torch and numpy random streams), so a baseline trains exactly as it would without it.

Its numbers come from :func:`world_model_probe_metrics`, the same protocol as the model-based agent's
``world_model_metrics`` (fresh random-policy transitions, :func:`cwm_rl.wm_evaluation.evaluate_windows`), so the
``wm_*`` curves of a baseline and of a model-based agent are comparable.

:func:`imagined_vs_real_return` measures what a planner or a Dyna learner relies on: from real start states, the
return the model predicts for the current policy (the policy acting on imagined observations) against the return
the real env gives it.

The fitting and metric code is kept in small functions (:func:`make_probe_model`, :func:`fit_steps`,
:func:`world_model_probe_metrics`) so it can be shared with the model-based agent's own learner.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from cwm_rl.data import TransitionWindows, collect, make_vector_env
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.factory import make_world_model
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.wm_evaluation import SUMMARY_KEYS, Normalizer, evaluate_windows
from cwm_rl.wm_training import WMTrainConfig, world_model_loss

from .sequence_buffer import SequenceBuffer

PROBE_SEED_OFFSET = 2_000_000
"""Probe data (fresh random-policy transitions) is seeded far from training and evaluation seeds; the same offset
as the model-based agent's ``world_model_metrics``, so both are judged on the same kind of data."""

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
        seed_steps: real transitions collected before the first fit (its normaliser statistics come from them).
        first_updates: gradient steps of the first fit; ``updates`` of every later one.
        train_every: real transitions between fits.
        buffer_size: transitions kept (FIFO), so memory stays bounded in long runs.
        window, lr, sparsity_weight: world-model training, as the model-based agent's defaults.
        batch_size: windows per gradient step (16, half the model-based agent's: per second of CPU, small batches
            of a small model learned the Pong graph fastest in a quick sweep).
        threads: torch CPU threads while fitting and judging (1 is fastest for these small batches; the caller's
            setting is restored afterwards).
        slot: the slot model's architecture (``d_model`` 16, half the model-based agent's, for cost).
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
    threads: int = 1
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=16))


def check_probe_config(cfg: ProbeConfig) -> None:
    """One line per value that cannot work."""
    for name in ("first_updates", "train_every", "buffer_size", "window", "batch_size", "threads"):
        if getattr(cfg, name) < 1:
            raise InvalidArgumentError(f"probe {name}={getattr(cfg, name)} must be a positive integer")
    for name in ("seed_steps", "updates"):
        if getattr(cfg, name) < 0:
            raise InvalidArgumentError(f"probe {name}={getattr(cfg, name)} must be >= 0")
    if not cfg.lr > 0:
        raise InvalidArgumentError(f"probe lr={cfg.lr} must be > 0")


# ------------------------------------------------------------------------------------------ model, fit, metrics


@dataclass
class EnvLayout:
    """What a world model needs to know about an env: slots, action kind, graph shape."""

    env_id: str
    slot_names: tuple[str, ...]
    slot_dims: list[int]
    action_spec: tuple[str, int]
    action_start: int

    @property
    def graph_shape(self) -> tuple[int, int]:
        return (len(self.slot_names), len(self.slot_names) + 1)

    @property
    def discrete(self) -> bool:
        return self.action_spec[0] == "discrete"


def env_layout(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvLayout:
    """Read the slot layout and action space of a registered causal env (builds one cheap vector env)."""
    venv, spec_id = make_vector_env(env_id, 1, dict(env_kwargs or {}))
    try:
        space = venv.single_action_space
        if isinstance(space, spaces.Discrete):
            action_spec, start = ("discrete", int(space.n)), int(space.start)
        elif isinstance(space, spaces.Box):
            action_spec, start = ("continuous", int(np.prod(space.shape))), 0
        else:
            raise InvalidArgumentError(f"{spec_id} has action space {space}; a world model needs Discrete or Box")
        dims = [s.stop - s.start for s in venv.slot_slices.values()]
        return EnvLayout(spec_id, tuple(venv.slot_names), dims, action_spec, start)
    finally:
        venv.close()


def make_probe_model(layout: EnvLayout, cfg: ProbeConfig, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A fresh world model and its AdamW optimiser, initialised from ``seed`` without touching torch's global
    random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_world_model(cfg.model, layout.slot_dims, layout.action_spec, cfg.slot)
    model.eval()
    return model, torch.optim.AdamW(model.parameters(), lr=cfg.lr)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def fit_steps(
    model: nn.Module,
    optim: torch.optim.Optimizer,
    buffer: SequenceBuffer,
    norm: Normalizer,
    updates: int,
    batch_size: int,
    rng: np.random.Generator,
    loss_cfg: WMTrainConfig,
) -> dict[str, float]:
    """``updates`` gradient steps on random windows of ``buffer`` (the model-based agent's recipe: the loss of
    ``cwm-rl wm-train``, gradient clipping at 1); returns the mean of each loss part. Uses the caller's torch
    random stream (wrap it in ``torch.random.fork_rng`` to keep the global one untouched)."""
    model.train()
    sums: dict[str, float] = {}
    for _ in range(updates):
        batch = buffer.sample(batch_size, rng)
        loss, parts = world_model_loss(model, batch, norm, loss_cfg)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    model.eval()
    return {k: v / max(updates, 1) for k, v in sums.items()}


def world_model_probe_metrics(
    model: nn.Module,
    norm: Normalizer,
    layout: EnvLayout,
    transitions: int = 1000,
    seed: int = PROBE_SEED_OFFSET,
    env_kwargs: dict[str, Any] | None = None,
    horizons: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """A world model judged on ``transitions`` fresh random-policy transitions of the env (seeded by ``seed``):
    prediction error (teacher-forced and open-loop at ``horizons`` steps) and local-graph SHD/F1/AUROC against the
    env's ``info["local_graph"]`` — the model-based agent's ``world_model_metrics`` protocol, keys of
    :data:`cwm_rl.wm_evaluation.SUMMARY_KEYS` (graph keys only for models with a graph).

    Raises:
        ValueError: ``transitions`` is too few to hold one window of ``max(horizons)`` steps.
    """
    window = max(horizons)
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        collect(layout.env_id, transitions, Path(tmp) / "probe", seed=seed, num_envs=8, env_kwargs=env_kwargs)
        ds = TransitionWindows(Path(tmp) / "probe", window, stride=window)
        out = evaluate_windows(model, norm, ds, layout.slot_dims, layout.slot_names, horizons)
    return {k: float(out[k]) for k in SUMMARY_KEYS if k in out}


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
        pred, state = model.step(state, norm.obs(x), norm.action(action))
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
    ``(obs, action, reward, next_obs, terminated, local_graph)``: ``obs`` is the algorithm's ``_last_obs`` (the
    observation the action was chosen from), ``next_obs`` the true next observation (``info["terminal_observation"]``
    when the sub-env was reset), ``terminated`` excludes time-limit truncations, and steps whose ``info`` carries no
    ``"local_graph"`` are skipped. Every ``train_every`` transitions it takes a few gradient steps
    (:class:`ProbeConfig`). It never changes what the agent does or samples.

    Args:
        env_id: the causal env the agent trains on; ``env_kwargs`` its constructor arguments.
        config: schedule and model (default: :class:`ProbeConfig`).
        seed: seeds the probe's model, its batch sampling and its evaluation data.
        log: optional ``callable(tag, value, step)`` for the fit losses (the training script passes TensorBoard's),
            tagged ``world_model/<part>`` as the model-based agent's.

    Attributes:
        world_model, optim, norm: the probe world model, its optimiser and normaliser (``norm`` is None before the
            first fit, when :attr:`ready` is False). (``model`` is SB3's: the algorithm the callback is attached to.)
        buffer: the stored transitions (None before training starts).
        fits, model_updates, fit_seconds: how much fitting it has done and the wall time it took.
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
        self.layout = env_layout(env_id, self.env_kwargs)
        self.probe_seed = int(seed)
        self.log = log
        self.world_model, self.optim = make_probe_model(self.layout, cfg, self.probe_seed)
        self.norm: Normalizer | None = None
        self.buffer: SequenceBuffer | None = None
        self._rng = np.random.default_rng(self.probe_seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.probe_seed + 1)
            self._torch_rng = torch.get_rng_state()
        self._loss_cfg = WMTrainConfig(model=cfg.model, sparsity_weight=cfg.sparsity_weight)
        self._since_fit = 0
        self.transitions_seen = 0
        self.fits = 0
        self.model_updates = 0
        self.fit_seconds = 0.0

    @property
    def ready(self) -> bool:
        """True once the probe has been fitted (its metrics exist)."""
        return self.norm is not None

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
        new_obs = np.asarray(local_vars["new_obs"], dtype=np.float32)
        n = new_obs.shape[0]
        if self.buffer is None:
            self.buffer = SequenceBuffer(n, self.config.buffer_size, self.config.window)
        infos = local_vars["infos"]
        dones = np.asarray(local_vars["dones"], dtype=bool).reshape(n)
        actions = local_vars["clipped_actions"] if "clipped_actions" in local_vars else local_vars["actions"]
        actions = _action_tensor(actions, self.layout.discrete, n).numpy()
        next_obs = new_obs.copy()
        terminated = np.zeros(n, dtype=bool)
        graphs = np.zeros((n, *self.layout.graph_shape), dtype=bool)
        valid = np.zeros(n, dtype=bool)
        for i, info in enumerate(infos):
            if dones[i] and "terminal_observation" in info:
                next_obs[i] = np.asarray(info["terminal_observation"], dtype=np.float32)
            terminated[i] = dones[i] and not info.get("TimeLimit.truncated", False)
            if "local_graph" in info:
                graphs[i] = info["local_graph"]
                valid[i] = True
        step = {
            "obs": np.array(last_obs, dtype=np.float32).reshape(n, -1),
            "action": actions,
            "reward": np.asarray(local_vars["rewards"], dtype=np.float32).reshape(n),
            "next_obs": next_obs.reshape(n, -1),
            "terminated": terminated,
            "local_graph": graphs,
        }
        self.buffer.add(step, valid, dones)
        stored = int(valid.sum())
        self.transitions_seen += stored
        self._since_fit += stored
        return stored

    def fit(self, updates: int) -> dict[str, float]:
        """``updates`` gradient steps on the stored windows (the first call fixes the normaliser from the data so
        far); returns the mean loss parts. Uses the probe's own torch and numpy random streams."""
        assert self.buffer is not None
        start = time.perf_counter()
        if self.norm is None:
            data = self.buffer.arrays()
            self.norm = Normalizer.from_arrays(data["obs"], data["next_obs"], self.layout.action_start)
        with torch_threads(self.config.threads), torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_rng)
            args = (self.buffer, self.norm, updates, self.config.batch_size, self._rng, self._loss_cfg)
            parts = fit_steps(self.world_model, self.optim, *args)
            self._torch_rng = torch.get_rng_state()
        self.fits += 1
        self.model_updates += updates
        self._since_fit = 0
        seconds = time.perf_counter() - start
        self.fit_seconds += seconds
        if self.log is not None:
            step = int(self.num_timesteps)
            for k, v in parts.items():
                self.log(f"world_model/{k}", v, step)
            self.log("world_model/fit_seconds", seconds, step)
        return parts

    def metrics(self, transitions: int = 1000, horizons: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
        """The probe judged on fresh random-policy transitions (:func:`world_model_probe_metrics`); empty before
        the first fit."""
        if not self.ready:
            return {}
        assert self.norm is not None
        seed = PROBE_SEED_OFFSET + self.probe_seed * 1_000 + self.model_updates % 1_000
        with torch_threads(self.config.threads):
            return world_model_probe_metrics(
                self.world_model, self.norm, self.layout, transitions, seed, self.env_kwargs, horizons
            )


__all__ = [
    "EnvLayout",
    "ProbeConfig",
    "WorldModelProbeCallback",
    "env_layout",
    "fit_steps",
    "imagined_vs_real_return",
    "make_probe_model",
    "world_model_probe_metrics",
]
