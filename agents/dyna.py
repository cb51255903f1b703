"""Dyna / MBPO: an SB3 off-policy learner (SAC or DQN) trained on a mix of real and imagined transitions.

The loop (``learn``) is Stable-Baselines3's own off-policy loop, unpatched. A callback sees every real vector step:
the transition (with ``info["local_graph"]``) goes into SB3's replay buffer, as always, and into the world model's
:class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer`. Every ``train_every`` real steps (after ``seed_steps``) the
world model (:class:`~cwm_rl.agents.world_model_learner.WorldModelLearner`, the one the MPC agent uses) is refitted,
then ``rollout_batch`` real states are drawn from the replay buffer and the current SB3 policy acts in the model for
up to ``rollout_horizon`` steps (MBPO's short branched rollouts, through the model's recurrent ``step`` as
:mod:`cwm_rl.planning.imagination` does). The imagined transitions go into the model part of a
:class:`MixedReplayBuffer`, a subclass of SB3's ``ReplayBuffer`` passed as ``replay_buffer_class``: every batch SB3
samples for a gradient step holds ``round(real_ratio * batch_size)`` real transitions and the rest imagined ones
(real only until the first imagined data exists).

Why short rollouts from real states (Janner et al., 2019, "When to Trust Your Model"): a learned model's error
compounds with the horizon, so k = 1-3 steps branched from states the agent really visited give many extra
transitions close to the real data distribution, and most gradient steps can then use them (``real_ratio`` 0.05
in MBPO) at a higher update-to-data ratio (``utd``) than a model-free learner can afford.

Agent id: ``causal-dyna`` (slot SSM world model with sparse cross-attention); SAC for Box action spaces, DQN for
Discrete ones (``algo: auto``). Per-env defaults: ``agents/configs/dyna.yaml``; SAC/DQN hyperparameters come from
``agents/configs/{sac,dqn}.yaml`` with ``sb3_kwargs`` merged over them.

Checkpoint: one ``agent.pt`` (:func:`cwm_rl.checkpoint.save_checkpoint`, written atomically) holding the world
model's learner state and SB3's own zip of the policy as bytes, with a manifest (kind ``dyna_agent``, env id, config,
seed). As for the other agents, replay data is not saved: training after ``load`` starts from empty buffers.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from cwm_rl.checkpoint import load_checkpoint, save_checkpoint
from cwm_rl.config import ConfigError, apply_overrides, from_dict, to_dict
from cwm_rl.envs.registration import spec_of
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.world_model import SlotModelConfig, consuming_step
from cwm_rl.wm_evaluation import Normalizer

from .coda import coda_transitions
from .model_based import MPC_AGENTS, env_defaults
from .sb3_baselines import _ALGO_CLASSES, SB3Agent, _jsonable, check_algo, load_hyperparams
from .sequence_buffer import SequenceBuffer
from .world_model_learner import EnvLayout, LearnerViews, WorldModelLearner, check_loss_weights, sb3_transitions

DYNA_AGENTS = {"causal-dyna": "slot-ssm"}
"""Agent id -> world model kind (:mod:`cwm_rl.models.factory`)."""

DYNA_ALGOS = ("auto", "sac", "dqn")
"""``auto``: DQN for a Discrete action space, SAC for a Box one."""

# SB3 arguments the Dyna agent sets itself, and the key to use instead.
_RESERVED_SB3 = {
    "replay_buffer_class": "the Dyna agent's MixedReplayBuffer",
    "replay_buffer_kwargs": "dyna.real_ratio and dyna.model_buffer_size",
    "gradient_steps": "dyna.utd (gradient steps per real env step)",
    "threads": "dyna.threads",
}


@dataclass
class DynaConfig:
    """Everything the Dyna agent depends on (``--set dyna.KEY=VALUE`` addresses these keys).

    Attributes:
        model: world model kind; set from the agent id.
        algo: the SB3 learner: ``auto`` (DQN for Discrete actions, SAC for Box), ``sac`` or ``dqn``.
        seed_steps: real env steps before the first world-model fit (its normaliser comes from them).
        train_every: real env steps between world-model refits; imagined data is regenerated after each.
        first_updates: gradient steps of the first world-model fit; ``updates`` of every later one.
        buffer_size: real transitions the world model keeps (FIFO), so memory stays bounded in long runs.
        window, batch_size, lr, sparsity_weight, reward_weight, prediction_loss: world-model training (as in
            ``cwm-rl wm-train``; ``reward_weight`` scales the reward head's squared error, in the env's raw reward
            units; ``prediction_loss`` is ``mse`` or ``l1``); ``dense_warmup``: the first world-model updates run
            with every cross-slot gate open and no sparsity penalty (``cwm-rl wm-train``'s key); ``batch_size``
            is the world model's (windows per step), SB3's own is ``sb3_kwargs.batch_size``.
        reset_every: re-initialise the world model at the first scheduled fit ``reset_every`` or more env steps after
            its first fit and refit it from scratch with ``first_updates``, as the MPC agent's key. 0 (default): never.
        rollout_horizon: MBPO's k, imagined steps per rollout (a rollout also stops at a predicted termination).
        rollout_batch: imagined rollouts (real start states) per refit (MBPO's rollout batch size).
        model_buffer_size: imagined transitions kept (FIFO); older ones come from older policies and models.
        real_ratio: share of real transitions in every SB3 training batch (MBPO: 0.05); 1 is model-free.
        coda_batch: pairs of real transitions mixed into counterfactual ones after every refit (CoDA, Pitis et al.
            2020, :mod:`cwm_rl.agents.coda`: slots the learned local graphs show independent are swapped between
            two transitions); the accepted ones join the imagined transitions in the model buffer. 0 (default): off.
            Needs a model with a graph (not ``mlp``).
        utd: SB3 gradient steps per real env step (update-to-data ratio; sets SB3's ``gradient_steps``).
        threads: torch CPU threads (1 is fastest for these small networks on 2 cores).
        slot: the slot models' architecture; ``mlp_hidden``/``mlp_layers`` the MLP's.
        sb3_kwargs: SAC/DQN hyperparameters merged over ``agents/configs/<algo>.yaml`` (replaces the whole mapping
            when set with ``--set``).
    """

    model: str = "slot-ssm"
    algo: str = "auto"
    seed_steps: int = 1000
    train_every: int = 250
    first_updates: int = 300
    updates: int = 40
    buffer_size: int = 100_000
    window: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    sparsity_weight: float = 0.02
    dense_warmup: int = 0
    reset_every: int = 0
    reward_weight: float = 1.0
    prediction_loss: str = "mse"
    rollout_horizon: int = 1
    rollout_batch: int = 1000
    model_buffer_size: int = 20_000
    real_ratio: float = 0.05
    coda_batch: int = 0
    utd: float = 1.0
    threads: int = 1
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=32))
    mlp_hidden: int = 256
    mlp_layers: int = 3
    sb3_kwargs: dict[str, Any] = field(default_factory=dict)


def check_dyna_config(cfg: DynaConfig) -> None:
    """One line per value that cannot work."""
    if cfg.model not in MPC_AGENTS.values():
        raise ConfigError(f"model={cfg.model!r} is not one of {sorted(set(MPC_AGENTS.values()))}")
    if cfg.algo not in DYNA_ALGOS:
        raise ConfigError(f"algo={cfg.algo!r} is not one of {', '.join(DYNA_ALGOS)}")
    for name in ("train_every", "first_updates", "window", "batch_size", "buffer_size", "threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    for name in ("rollout_horizon", "rollout_batch", "model_buffer_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    for name in ("seed_steps", "updates", "coda_batch", "reset_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be >= 0")
    if cfg.coda_batch == 1:
        raise ConfigError("coda_batch=1: CoDA mixes pairs of transitions; use 0 (off) or at least 2")
    if cfg.coda_batch and cfg.model == "mlp":
        raise ConfigError("coda_batch needs a world model with a local causal graph; the mlp model has none")
    if cfg.coda_batch and cfg.sb3_kwargs.get("optimize_memory_usage"):
        raise ConfigError("coda_batch reads next observations SB3 does not keep with optimize_memory_usage=true")
    if not 0.0 <= cfg.real_ratio <= 1.0:
        raise ConfigError(f"real_ratio={cfg.real_ratio} must be in [0, 1] (the share of real data per batch)")
    if not (np.isfinite(cfg.utd) and cfg.utd > 0):
        raise ConfigError(f"utd={cfg.utd} must be a number > 0 (gradient steps per real env step)")
    check_loss_weights(cfg)
    for key in cfg.sb3_kwargs:
        if key in _RESERVED_SB3:
            raise ConfigError(f"sb3_kwargs.{key} is set by the Dyna agent; use {_RESERVED_SB3[key]} instead")


# ------------------------------------------------------------------------------------------------ the buffer


class MixedReplayBuffer(ReplayBuffer):
    """SB3's ``ReplayBuffer`` for real transitions plus a FIFO model buffer of imagined ones; batches mix both.

    SB3 fills the real part as usual (``add``, with its time-limit handling). :meth:`add_model` appends imagined
    transitions. :meth:`sample` returns ``round(real_ratio * batch_size)`` real transitions followed by imagined
    ones (a fixed split, as MBPO's, so the ratio holds in every batch, not only on average); while the model buffer
    is empty every transition is real, so the learner can start before the first imagined data.

    Args:
        buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
            handle_timeout_termination: as SB3's ``ReplayBuffer`` (SB3 passes them).
        real_ratio: share of real transitions per batch, in [0, 1].
        model_buffer_size: imagined transitions kept; the oldest are overwritten first.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        real_ratio: float = 0.05,
        model_buffer_size: int = 20_000,
    ) -> None:
        if not 0.0 <= real_ratio <= 1.0:
            raise ConfigError(f"real_ratio={real_ratio} must be in [0, 1] (the share of real data per batch)")
        if model_buffer_size < 1:
            raise ConfigError(f"model_buffer_size={model_buffer_size} must be a positive integer")
        args = (buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage)
        super().__init__(*args, handle_timeout_termination=handle_timeout_termination)
        self.real_ratio = float(real_ratio)
        self.model_buffer_size = int(model_buffer_size)
        m = self.model_buffer_size
        self.model_observations = np.zeros((m, *self.obs_shape), dtype=self.observations.dtype)
        self.model_next_observations = np.zeros((m, *self.obs_shape), dtype=self.observations.dtype)
        self.model_actions = np.zeros((m, self.action_dim), dtype=self.actions.dtype)
        self.model_rewards = np.zeros(m, dtype=np.float32)
        self.model_dones = np.zeros(m, dtype=np.float32)
        self.model_pos = 0
        self.model_full = False

    def real_size(self) -> int:
        """Real transitions stored (over all sub-envs)."""
        return (self.buffer_size if self.full else self.pos) * self.n_envs

    def model_size(self) -> int:
        """Imagined transitions stored."""
        return self.model_buffer_size if self.model_full else self.model_pos

    def add_model(
        self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray, done: np.ndarray
    ) -> None:
        """Append ``n`` imagined transitions: ``obs``/``next_obs (n, *obs_shape)``, ``action (n, action_dim)`` in
        the buffer's action units (SAC: scaled to [-1, 1], as SB3 stores real ones), ``reward``/``done (n,)``."""
        n = len(obs)
        if n == 0:
            return
        m = self.model_buffer_size
        if n > m:  # only the newest m fit
            obs, next_obs, action, reward, done = (x[n - m :] for x in (obs, next_obs, action, reward, done))
            n = m
        idx = (self.model_pos + np.arange(n)) % m
        self.model_observations[idx] = np.asarray(obs).reshape(n, *self.obs_shape)
        self.model_next_observations[idx] = np.asarray(next_obs).reshape(n, *self.obs_shape)
        self.model_actions[idx] = np.asarray(action).reshape(n, self.action_dim)
        self.model_rewards[idx] = np.asarray(reward, dtype=np.float32).reshape(n)
        self.model_dones[idx] = np.asarray(done, dtype=np.float32).reshape(n)
        self.model_full = self.model_full or self.model_pos + n >= m
        self.model_pos = int((self.model_pos + n) % m)

    def split(self, batch_size: int) -> tuple[int, int]:
        """``(real, imagined)`` transitions in a batch of ``batch_size``."""
        if self.model_size() == 0:
            return batch_size, 0
        n_real = int(round(self.real_ratio * batch_size))
        return n_real, batch_size - n_real

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """A batch of ``batch_size``: real transitions first (SB3's sampling), then imagined ones."""
        n_real, n_model = self.split(batch_size)
        parts = []
        if n_real > 0:
            parts.append(super().sample(n_real, env=env))
        if n_model > 0:
            parts.append(self._model_samples(n_model, env))
        if len(parts) == 1:
            return parts[0]
        return ReplayBufferSamples(*(torch.cat([a, b]) for a, b in zip(parts[0][:5], parts[1][:5], strict=True)))

    def _model_samples(self, n: int, env: VecNormalize | None) -> ReplayBufferSamples:
        idx = np.random.randint(0, self.model_size(), size=n)  # SB3's own random stream, as its real samples
        data = (
            self._normalize_obs(self.model_observations[idx], env),
            self.model_actions[idx],
            self._normalize_obs(self.model_next_observations[idx], env),
            self.model_dones[idx].reshape(-1, 1),
            self._normalize_reward(self.model_rewards[idx].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    def sample_real_transitions(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` real transitions drawn uniformly (with replacement): ``obs``, ``next_obs`` and ``action`` (buffer
        units: SAC's scaled to [-1, 1]). Needs ``optimize_memory_usage=False`` (next observations kept apart)."""
        upper = self.buffer_size if self.full else self.pos
        if upper == 0:
            raise ValueError("the replay buffer holds no real transition yet")
        t = rng.integers(0, upper, size=n)
        e = rng.integers(0, self.n_envs, size=n)
        return {
            "obs": np.array(self.observations[t, e], dtype=np.float32),
            "next_obs": np.array(self.next_observations[t, e], dtype=np.float32),
            "action": np.array(self.actions[t, e]),
        }

    def sample_real_obs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` real observations drawn uniformly (with replacement): start states of imagined rollouts."""
        upper = self.buffer_size if self.full else self.pos
        if upper == 0:
            raise ValueError("the replay buffer holds no real transition yet")
        t = rng.integers(0, upper, size=n)
        e = rng.integers(0, self.n_envs, size=n)
        return np.array(self.observations[t, e], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ imagination


@torch.no_grad()
def imagine_rollouts(
    model: nn.Module,
    norm: Normalizer,
    start_obs: np.ndarray,
    act: Callable[[np.ndarray], np.ndarray],
    horizon: int,
    discrete: bool,
) -> dict[str, np.ndarray]:
    """Roll a world model forward from real states with a policy acting on the imagined observations.

    Each row of ``start_obs (n, obs_dim)`` starts at the model's initial recurrent state (every suite env is
    Markov in its observation, as :class:`~cwm_rl.planning.imagination.Imagination` assumes); for ``horizon``
    steps ``act`` picks env actions for the current imagined observations and the model's ``step`` predicts the
    next observation, the reward and the termination. A rollout stops after a step whose predicted termination
    probability is above 1/2 (that step is kept, marked terminated) or whose prediction is not finite (dropped).

    Args:
        model: a world model of :mod:`cwm_rl.models` (``initial_state``/``step``).
        norm: the normaliser it was trained with.
        start_obs: real start observations.
        act: ``obs (m, obs_dim) -> env actions (m,)`` (Discrete) or ``(m, action_dim)`` (Box).
        horizon: steps per rollout (MBPO's k).
        discrete: whether actions are Discrete.

    Returns:
        Flat imagined transitions ``obs``, ``action`` (env units), ``reward``, ``next_obs``, ``terminated``, in step
        order (all rollouts' first steps, then the second steps of those still running, ...).
    """
    was_training = model.training
    model.eval()
    x = torch.as_tensor(np.asarray(start_obs, dtype=np.float32))
    n = x.shape[0]
    state = model.initial_state(n)
    alive = torch.ones(n, dtype=torch.bool)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated")}
    for _ in range(horizon):
        obs_np = x.numpy().copy()
        action = np.asarray(act(obs_np))
        if discrete:
            a_t = torch.as_tensor(action.reshape(n).astype(np.int64))
        else:
            a_t = torch.as_tensor(action.reshape(n, -1).astype(np.float32))
        pred, state = consuming_step(model)(state, norm.obs(x), norm.action(a_t))
        nxt = x + norm.unnormalize_delta(pred.delta)
        terminated = pred.termination_logit > 0
        keep = alive & torch.isfinite(nxt).all(-1) & torch.isfinite(pred.reward)
        rows = keep.numpy()
        out["obs"].append(obs_np[rows])
        out["action"].append(action[rows])
        out["reward"].append(pred.reward.numpy()[rows].astype(np.float32))
        out["next_obs"].append(nxt.numpy()[rows])
        out["terminated"].append(terminated.numpy()[rows])
        alive = keep & ~terminated
        if not alive.any():
            break
        x = torch.where(alive[:, None], nxt, x)  # ended rollouts stay put (their rows are no longer recorded)
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------ the agent


class _DynaCallback(BaseCallback):
    """Hands every real vector step of SB3's loop to the agent (and the caller's callback)."""

    def __init__(self, agent: DynaAgent, callback: Callable[[DynaAgent], bool] | None) -> None:
        super().__init__(verbose=0)
        self.agent = agent
        self.callback = callback

    def _on_step(self) -> bool:
        # Called after env.step and before SB3 stores the transition: _last_obs is still the acting observation.
        return self.agent._on_real_step(self.model._last_obs, self.locals, self.callback)

    def _on_rollout_start(self) -> None:
        # Where SB3's loop keeps no state in local variables: a caller's ``safe_point(agent)`` (the training
        # script's snapshot for an exact resume) runs here.
        safe_point = getattr(self.callback, "safe_point", None)
        if safe_point is not None:
            safe_point(self.agent)


class DynaAgent(LearnerViews):
    """Dyna / MBPO agent: a world model learned online feeds imagined transitions to an SB3 SAC or DQN learner.

    Follows the agent protocol of :mod:`cwm_rl.agents.base`.

    Args:
        env_id: a registered causal env.
        config: the agent's config (default: :class:`DynaConfig`).
        seed: seeds the envs, SB3 (torch, numpy, action sampling), the world model and the imagination start
            states; a CPU run is reproduced exactly.
        env_kwargs: env constructor arguments.
        log: optional ``callable(tag, value, step)`` for scalars (the training script passes TensorBoard's).
        tensorboard_log: folder for SB3's own TensorBoard events (``None``: none).

    Attributes:
        sb3: the :class:`~cwm_rl.agents.sb3_baselines.SB3Agent` learner (its ``model`` is the SB3 algorithm;
            the agent's own ``model`` is the world model, as the MPC agent's).
        learner: the world model's :class:`~cwm_rl.agents.world_model_learner.WorldModelLearner`.
        buffer: real transitions for the world model (windows with local graphs).
        episode_returns: returns of finished training episodes, in order.
        imagined: imagined transitions generated so far.
        counterfactual: CoDA transitions added so far (``coda_batch``).
    """

    def __init__(
        self,
        env_id: str,
        config: DynaConfig | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        log: Callable[[str, float, int], None] | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = cfg = config or DynaConfig()
        check_dyna_config(cfg)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise InvalidArgumentError(f"seed={seed!r} must be an integer")
        self.seed = int(seed)
        self.env_kwargs = dict(env_kwargs or {})
        self.log = log
        self.layout = EnvLayout.for_env(env_id, self.env_kwargs)
        self.env_id = self.layout.env_id
        self.algo = ("dqn" if self.layout.discrete else "sac") if cfg.algo == "auto" else check_algo(cfg.algo)
        self.sb3 = SB3Agent(
            self.algo,
            self.env_id,
            seed=self.seed,
            hyperparams=self._sb3_overrides(),
            tensorboard_log=tensorboard_log,
            env_kwargs=self.env_kwargs,
        )
        n_envs = self.sb3.n_envs
        if cfg.buffer_size < cfg.window * n_envs:
            raise ConfigError(f"buffer_size={cfg.buffer_size} must hold at least window * n_envs transitions")
        self.learner = WorldModelLearner(self.layout, cfg, seed=self.seed, env_kwargs=self.env_kwargs, log=self._emit)
        self.buffer = SequenceBuffer(n_envs, cfg.buffer_size, cfg.window)
        self._rng = np.random.default_rng([self.seed, 1])  # imagination start states and DQN's imagined epsilon
        self._since_fit = 0
        self.imagined = 0
        self.counterfactual = 0
        self.episode_returns: list[float] = []

    def _sb3_overrides(self) -> dict[str, Any]:
        """``sb3_kwargs`` plus what the Dyna agent sets: the mixed buffer and ``gradient_steps`` from ``utd``."""
        cfg = self.config
        user = dict(cfg.sb3_kwargs)
        resolved = load_hyperparams(self.algo, self.env_id, user)  # checks the keys, reads train_freq and n_envs
        if int(resolved.get("n_steps", 1)) != 1:
            raise ConfigError("sb3_kwargs.n_steps must be 1: n-step returns do not apply to imagined transitions")
        freq = resolved.get("train_freq", inspect.signature(_ALGO_CLASSES[self.algo]).parameters["train_freq"].default)
        if isinstance(freq, (list, tuple)) and len(freq) == 2 and freq[1] == "step":
            freq = freq[0]
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
            raise ConfigError(f"sb3_kwargs.train_freq={freq!r} must be a positive number of steps for causal-dyna")
        env_steps_per_round = freq * int(resolved["n_envs"])
        return {
            **user,
            "gradient_steps": max(1, int(round(cfg.utd * env_steps_per_round))),
            "threads": cfg.threads,  # SB3Agent.learn runs on these threads (the world model's fits run inside it)
            "replay_buffer_class": MixedReplayBuffer,
            "replay_buffer_kwargs": {"real_ratio": cfg.real_ratio, "model_buffer_size": cfg.model_buffer_size},
        }

    # ------------------------------------------------------------------ state
    @property
    def num_timesteps(self) -> int:
        """Real env steps taken so far (summed over sub-envs)."""
        return self.sb3.num_timesteps

    @property
    def replay_buffer(self) -> MixedReplayBuffer:
        """SB3's replay buffer: real and imagined transitions."""
        return self.sb3.model.replay_buffer

    # ------------------------------------------------------------------ acting
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The SB3 policy's actions for a batch ``obs (n, obs_dim)``."""
        return self.sb3.predict(obs, deterministic=deterministic)

    # ------------------------------------------------------------------ learning
    def learn(self, total_env_steps: int, callback: Callable[[DynaAgent], bool] | None = None) -> DynaAgent:
        """Interact for ``total_env_steps`` more real env steps (summed over sub-envs) in SB3's loop.

        ``callback(agent)`` runs after every vector step; returning False stops early. As with the SB3 agents,
        schedules (DQN's epsilon) span each call, so prefer one call with the full budget.
        """
        if isinstance(total_env_steps, bool) or not isinstance(total_env_steps, (int, np.integer)):
            raise InvalidArgumentError(f"total_env_steps={total_env_steps!r} must be a positive integer")
        if total_env_steps < 1:
            raise InvalidArgumentError(f"total_env_steps={total_env_steps} must be a positive integer")
        torch.set_num_threads(self.config.threads)
        self.sb3.learn(int(total_env_steps), callback=_DynaCallback(self, callback))
        return self

    def _on_real_step(
        self, last_obs: Any, local_vars: dict[str, Any], callback: Callable[[DynaAgent], bool] | None
    ) -> bool:
        """Store one real vector step for the world model; refit and re-imagine on schedule."""
        cfg = self.config
        step, valid, ended = sb3_transitions(last_obs, local_vars, self.layout)
        self.buffer.add(step, valid, ended)
        self._since_fit += int(valid.sum())
        for info in local_vars["infos"]:
            if "episode" in info:  # SB3's Monitor: the episode that just ended
                self.episode_returns.append(float(info["episode"]["r"]))
                self._emit("rollout/episode_return", self.episode_returns[-1])
        due = not self.model_ready or self._since_fit >= cfg.train_every
        if self.num_timesteps >= cfg.seed_steps and due and self.buffer.window_starts().shape[0] > 0:
            self.learner.reset_if_due(self.num_timesteps, cfg.reset_every)
            self.fit_world_model(cfg.updates if self.model_ready else cfg.first_updates)
            self.imagine()
            self.augment()
        return not (callback is not None and callback(self) is False)

    def fit_world_model(self, updates: int) -> dict[str, float]:
        """``updates`` gradient steps of the world model on windows of real data; returns the mean loss parts."""
        means = self.learner.fit(self.buffer, updates)
        self._since_fit = 0
        return means

    def imagine(self) -> int:
        """Refresh the model buffer: ``rollout_batch`` rollouts of up to ``rollout_horizon`` steps from real states
        with the current policy acting in the world model; returns the imagined transitions added."""
        replay = self.replay_buffer
        if not self.model_ready or replay.real_size() == 0:
            return 0
        start = time.perf_counter()
        starts = replay.sample_real_obs(self.config.rollout_batch, self._rng)
        model, norm, horizon = self.learner.model, self.learner.norm, self.config.rollout_horizon
        data = imagine_rollouts(model, norm, starts, self._imagined_actions, horizon, self.layout.discrete)
        if self.layout.discrete:
            buffer_actions = data["action"].reshape(-1, 1)
        else:  # SAC stores actions scaled to [-1, 1]; the world model sees env units
            buffer_actions = self.sb3.model.policy.scale_action(data["action"])
        replay.add_model(data["obs"], data["next_obs"], buffer_actions, data["reward"], data["terminated"])
        n = len(data["obs"])
        self.imagined += n
        self._emit("dyna/imagined_transitions", float(n))
        if n:
            self._emit("dyna/imagined_reward_mean", float(data["reward"].mean()))
            self._emit("dyna/imagined_termination_rate", float(data["terminated"].mean()))
        self._emit("dyna/imagine_seconds", time.perf_counter() - start)
        return n

    def augment(self) -> int:
        """CoDA: mix ``coda_batch`` pairs of real transitions into counterfactual ones (:mod:`.coda`) and add the
        accepted ones to the model buffer; returns how many were added (0 when ``coda_batch`` is 0)."""
        replay, n_pairs = self.replay_buffer, self.config.coda_batch
        if n_pairs == 0 or not self.model_ready or replay.real_size() == 0:
            return 0
        real = replay.sample_real_transitions(n_pairs, self._rng)
        if self.layout.discrete:
            env_actions = real["action"].reshape(-1).astype(np.int64)
        else:  # the world model sees env units; SB3 stores SAC's actions scaled to [-1, 1]
            env_actions = self.sb3.model.policy.unscale_action(real["action"]).astype(np.float32)
        model, norm = self.learner.model, self.learner.norm
        data, stats = coda_transitions(
            model, norm, self.layout.slot_dims, real["obs"], env_actions, real["next_obs"], self._rng
        )
        if self.layout.discrete:
            buffer_actions = data["action"].reshape(-1, 1)
        else:
            buffer_actions = self.sb3.model.policy.scale_action(data["action"])
        replay.add_model(data["obs"], data["next_obs"], buffer_actions, data["reward"], data["terminated"])
        n = len(data["obs"])
        self.counterfactual += n
        self._emit("dyna/coda_transitions", float(n))
        self._emit("dyna/coda_splittable_share", stats["splittable"] / max(1, stats["pairs"]))
        self._emit("dyna/coda_accepted_share", stats["accepted"] / max(1, stats["pairs"]))
        return n

    def _imagined_actions(self, obs: np.ndarray) -> np.ndarray:
        """The behaviour policy in imagination: SAC samples its stochastic policy; DQN is epsilon-greedy at its
        current exploration rate with a coin per rollout (``DQN.predict`` flips one coin for a whole batch)."""
        model = self.sb3.model
        if not self.layout.discrete:
            actions, _ = model.predict(obs, deterministic=False)
            return np.asarray(actions, dtype=np.float32)
        greedy, _ = model.policy.predict(obs, deterministic=True)
        greedy = np.asarray(greedy, dtype=np.int64).reshape(len(obs))
        explore = self._rng.random(len(obs)) < float(model.exploration_rate)
        random = self._rng.integers(0, self.layout.action_spec[1], size=len(obs)) + self.layout.action_start
        return np.where(explore, random, greedy)

    def world_model_metrics(self, transitions: int = 1000, horizons: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
        """The world model judged on fresh random-policy transitions (:meth:`WorldModelLearner.metrics`), the same
        protocol as the MPC agent's. Empty before the model is first fitted."""
        return self.learner.metrics(transitions, horizons)

    def _emit(self, tag: str, value: float) -> None:
        if self.log is not None:
            self.log(tag, value, self.num_timesteps)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """The SB3 policy (its own zip, as bytes), the world model and the config in one file, written atomically."""
        sb3_zip = io.BytesIO()
        self.sb3.model.save(sb3_zip)
        payload = {**self.learner.state(), "sb3_zip": sb3_zip.getvalue(), "since_fit": self._since_fit}
        manifest = {
            "kind": "dyna_agent",
            "env_id": self.env_id,
            "algo": self.algo,
            "model": self.config.model,
            "config": to_dict(self.config),
            "seed": self.seed,
            "env_kwargs": self.env_kwargs,
            "step": self.num_timesteps,
            "sb3_hyperparams": _jsonable(self.sb3.hyperparams),
        }
        return save_checkpoint(path, payload, manifest)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        env_id: str | None = None,
        log: Callable[[str, float, int], None] | None = None,
        tensorboard_log: str | os.PathLike[str] | None = None,
    ) -> DynaAgent:
        """Rebuild a saved agent (policy, world model, normaliser) with fresh envs; ``env_id`` must match if given.

        Raises:
            CheckpointError: missing, corrupt or foreign file, or an agent of another env.
        """
        expect = {"kind": "dyna_agent", **({"env_id": spec_of(env_id).id} if env_id else {})}
        data = load_checkpoint(path, expect=expect)
        manifest = data["manifest"]
        cfg = from_dict(DynaConfig, manifest["config"], where=str(path))
        env_kwargs = manifest.get("env_kwargs")
        tb = None if tensorboard_log is None else os.fspath(tensorboard_log)
        agent = cls(manifest["env_id"], cfg, seed=manifest["seed"], env_kwargs=env_kwargs, log=log, tensorboard_log=tb)
        zipped = io.BytesIO(data["sb3_zip"])
        agent.sb3.model = _ALGO_CLASSES[agent.algo].load(zipped, env=agent.sb3.env, device="cpu", tensorboard_log=tb)
        agent.learner.load_state(data)
        agent._since_fit = int(data.get("since_fit", 0))
        return agent

    def close(self) -> None:
        """Close the training envs."""
        self.sb3.close()

    def __repr__(self) -> str:
        return f"DynaAgent({self.env_id!r}, algo={self.algo!r}, seed={self.seed}, num_timesteps={self.num_timesteps})"


# ------------------------------------------------------------------------------------------------ config

CONFIG_FILE = Path(__file__).resolve().parent / "configs" / "dyna.yaml"


def dyna_config_for(
    agent_id: str = "causal-dyna", overrides: dict[str, Any] | None = None, env_id: str | None = None
) -> DynaConfig:
    """The config of a Dyna agent id: :class:`DynaConfig` < the env's defaults (``dyna.yaml``) < ``overrides``."""
    if agent_id not in DYNA_AGENTS:
        raise InvalidArgumentError(f"unknown Dyna agent {agent_id!r}; choose one of {sorted(DYNA_AGENTS)}")
    cfg = dataclasses.replace(DynaConfig(), model=DYNA_AGENTS[agent_id])
    cfg = apply_overrides(cfg, env_defaults(env_id, CONFIG_FILE, "Dyna config file"), where=str(CONFIG_FILE))
    return apply_overrides(cfg, overrides or {})


__all__ = [
    "DYNA_AGENTS",
    "DynaAgent",
    "DynaConfig",
    "MixedReplayBuffer",
    "check_dyna_config",
    "dyna_config_for",
    "imagine_rollouts",
]
