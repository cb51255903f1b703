"""World-model learning inside an RL loop, shared by every agent that learns a world model online.

:class:`WorldModelLearner` owns what learning a world model from an agent's own experience needs: the model
(:func:`cwm_rl.models.factory.make_world_model`), its AdamW optimiser, the :class:`~cwm_rl.wm_evaluation.Normalizer`
fitted once on the seed data, and its own torch and numpy random streams. ``fit(buffer, updates)`` takes gradient
steps on windows of a :class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer` with the loss of ``cwm-rl wm-train``
(:func:`cwm_rl.wm_training.world_model_loss`); ``metrics`` judges the model on fresh random-policy transitions;
``state``/``load_state`` go into the agent's checkpoint.

The MPC agent (:mod:`cwm_rl.agents.model_based`) and the Dyna agent (:mod:`cwm_rl.agents.dyna`) both use it, so
the model, the fitting recipe and the evaluation protocol exist once. The agents own the replay data (the
buffer), the schedule (when to fit, how many updates) and what the model is used for (planning or imagined data).

Random streams: the learner initialises its model, draws batches and runs its gradient steps on streams of its own
(``torch.random.fork_rng``), so the global torch stream (which Stable-Baselines3 and the planners use) is left as it
was, and two agents in one process never change each other's runs. The same seed gives the same model on CPU.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from cwm_rl.config import ConfigError
from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.factory import make_world_model
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.wm_evaluation import Normalizer
from cwm_rl.wm_training import PREDICTION_LOSSES, WMTrainConfig, world_model_loss

from .sequence_buffer import SequenceBuffer

PROBE_SEED_OFFSET = 2_000_000
"""The random-policy transitions of :meth:`WorldModelLearner.metrics` are seeded far from training and evaluation
seeds (evaluation uses 1,000,000), so the model is never judged on episodes it trained on."""

EVAL_ENVS = 8
"""Sub-envs that collect the random-policy transitions of :meth:`WorldModelLearner.metrics` (each gets about
``transitions / EVAL_ENVS`` consecutive steps)."""

EVAL_HORIZONS = (1, 5, 10)
"""Open-loop horizons of :meth:`WorldModelLearner.metrics`; the longest is the evaluation window."""


def min_eval_transitions(horizons: Sequence[int] = EVAL_HORIZONS) -> int:
    """The fewest random-policy transitions :meth:`WorldModelLearner.metrics` can judge a model on: the
    transitions are spread over :data:`EVAL_ENVS` sub-envs, and the first must run one window of ``max(horizons)``
    steps (``EVAL_ENVS * (max(horizons) - 1) + 1``: 73 for the default horizons)."""
    return EVAL_ENVS * (max(horizons) - 1) + 1


@dataclass(frozen=True)
class EnvLayout:
    """What a world model needs to know about an env: its slots and its action space.

    Attributes:
        env_id: the registered spec id.
        slot_names: the env's slots, in observation order.
        slot_dims: observation entries of each slot.
        action_spec: ``("discrete", n)`` or ``("continuous", action_dim)``, as :func:`make_world_model` takes it.
        action_start: first action of a ``Discrete(n, start)`` space (0 for Box); the normaliser shifts by it.
    """

    env_id: str
    slot_names: tuple[str, ...]
    slot_dims: tuple[int, ...]
    action_spec: tuple[str, int]
    action_start: int

    @classmethod
    def of(cls, vector_env: Any, env_id: str) -> EnvLayout:
        """The layout of a causal env's vector env (``slot_names``, ``slot_slices``, ``single_action_space``).

        Raises:
            InvalidArgumentError: the action space is neither Discrete nor Box.
        """
        space = vector_env.single_action_space
        if isinstance(space, spaces.Discrete):
            action_spec, start = ("discrete", int(space.n)), int(space.start)
        elif isinstance(space, spaces.Box):
            action_spec, start = ("continuous", int(np.prod(space.shape))), 0
        else:
            raise InvalidArgumentError(f"{env_id} has action space {space}; a world model needs Discrete or Box")
        dims = tuple(s.stop - s.start for s in vector_env.slot_slices.values())
        return cls(env_id, tuple(vector_env.slot_names), dims, action_spec, start)

    @classmethod
    def for_env(cls, env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvLayout:
        """The layout of a registered causal env, read from one cheap vector env (built and closed here).

        Raises:
            InvalidArgumentError: bad env kwargs, or an action space that is neither Discrete nor Box.
            UnknownEnvError: ``env_id`` is not registered.
        """
        from cwm_rl.data import make_vector_env

        venv, spec_id = make_vector_env(env_id, 1, dict(env_kwargs or {}))
        try:
            return cls.of(venv, spec_id)
        finally:
            venv.close()

    @property
    def discrete(self) -> bool:
        """True for a Discrete action space."""
        return self.action_spec[0] == "discrete"

    @property
    def graph_shape(self) -> tuple[int, int]:
        """Shape of a local causal graph: ``(n_slots, n_slots + 1)``."""
        return (len(self.slot_names), len(self.slot_names) + 1)


class LearnerConfig(Protocol):
    """The world-model keys an agent config provides (``MPCConfig`` and ``DynaConfig`` both do)."""

    model: str
    slot: SlotModelConfig
    mlp_hidden: int
    mlp_layers: int
    lr: float
    batch_size: int
    sparsity_weight: float
    dense_warmup: int
    reward_weight: float
    prediction_loss: str


def check_loss_weights(cfg: LearnerConfig) -> None:
    """One line if the learning rate, a loss weight or the loss kind cannot work (an agent config's check calls
    it)."""
    if not (np.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError(f"lr={cfg.lr} must be a number > 0")
    if cfg.prediction_loss not in PREDICTION_LOSSES:
        raise ConfigError(f"prediction_loss={cfg.prediction_loss!r} is not one of {PREDICTION_LOSSES}")
    for name in ("sparsity_weight", "reward_weight"):
        value = getattr(cfg, name)
        if not (np.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}={value} must be a number >= 0")
    if cfg.dense_warmup < 0:
        raise ConfigError(f"dense_warmup={cfg.dense_warmup} must be an integer >= 0")


class WorldModelLearner:
    """A world model learned online from an agent's real transitions.

    Args:
        layout: the env's slots and action space.
        config: the world-model keys (``model``, ``slot``, ``mlp_hidden``, ``mlp_layers``, ``lr``,
            ``batch_size``, ``sparsity_weight``, ``dense_warmup``, ``reward_weight``, ``prediction_loss``) of the
            agent's config.
        seed: seeds the model's initialisation, the batch draws and the gradient steps' torch stream.
        env_kwargs: env constructor arguments (for the evaluation data of :meth:`metrics`).
        log: optional ``callable(tag, value)`` for the fit losses (``world_model/<part>``, ``world_model/fit_seconds``);
            the agent binds its own step counter.

    Attributes:
        model: the world model (in eval mode between fits).
        optim: its AdamW optimiser.
        norm: the normaliser, fixed at the first fit from the data seen so far (None before: :attr:`ready`).
        model_updates: gradient steps taken so far, by every model this learner has had (:meth:`reset`).
        resets: how often the model was re-initialised (:meth:`reset`).
        model_age: gradient steps of the current model (``dense_warmup`` counts these).
        born_at: the agent's env step at the current model's first fit (None before it; :meth:`reset_if_due`).
    """

    def __init__(
        self,
        layout: EnvLayout,
        config: LearnerConfig,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        log: Callable[[str, float], None] | None = None,
    ) -> None:
        self.layout = layout
        self.config = config
        self.seed = int(seed)
        self.env_kwargs = dict(env_kwargs or {})
        self.log = log
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._torch_rng = torch.get_rng_state()
        self._rng = np.random.default_rng(self.seed)
        self.model_updates = 0
        self.resets = 0
        self._new_model()

    def _new_model(self) -> None:
        """A freshly initialised model (drawn from the learner's torch stream), optimiser and no normaliser."""
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_rng)
            dims = list(self.layout.slot_dims)
            self.model: nn.Module = make_world_model(
                cfg.model, dims, self.layout.action_spec, cfg.slot, cfg.mlp_hidden, cfg.mlp_layers
            )
            self._torch_rng = torch.get_rng_state()
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        self.norm: Normalizer | None = None
        self.model_age = 0  # gradient steps of this model (``dense_warmup`` counts them)
        self.born_at: int | None = None  # env step of this model's first fit (:meth:`reset_if_due`)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A snapshot of a version without resets: its one model was never reset.
        state.setdefault("resets", 0)
        state.setdefault("model_age", state["model_updates"])
        state.setdefault("born_at", None)
        self.__dict__.update(state)

    def reset(self) -> None:
        """Re-initialise the world model: new weights, a new optimiser, no normaliser; the next :meth:`fit` starts
        from scratch on the whole buffer (its normaliser from the buffer as it is then), with ``dense_warmup``
        counted afresh. The batch stream and :attr:`model_updates` go on.

        Why: a model fitted online is shaped by the data it saw first (the *primacy bias* of Nikishin et al. 2022,
        who reset networks periodically). On Pusher2D the sparse slot model's gates close during the first fit on
        random play and stay shut when the agent's contact-rich data arrives (docs/design_notes.md, "Pusher2D,
        session 17"); a model fitted from scratch on that agent's buffer reads the contact edge.
        """
        self._new_model()
        self.resets += 1
        if self.log is not None:
            self.log("world_model/reset", float(self.resets))

    def reset_if_due(self, env_steps: int, every: int) -> bool:
        """Call before each scheduled fit, with the agent's env steps so far: re-initialises the model (:meth:`reset`)
        when its first fit was ``every`` or more env steps ago, and returns whether it did (``every`` 0: never).
        Before a model's first fit it records ``env_steps`` as that model's start."""
        if not self.ready or self.born_at is None:
            self.born_at = int(env_steps)
            return False
        if every <= 0 or env_steps - self.born_at < every:
            return False
        self.reset()
        self.born_at = int(env_steps)
        return True

    @property
    def ready(self) -> bool:
        """True once the model has been fitted (it has a normaliser and has seen data)."""
        return self.norm is not None

    def fit(self, buffer: SequenceBuffer, updates: int) -> dict[str, float]:
        """``updates`` gradient steps on random windows of ``buffer``; returns the mean of each loss part.

        The first call fixes the normaliser from every transition in ``buffer`` (the seed data), so the model's
        inputs do not drift as the agent's data distribution changes. Dimensions that never changed in the seed
        data are held fixed in imagination until the buffer shows them change; then they, and inputs that had no
        spread, get their real scale (:meth:`~cwm_rl.wm_evaluation.Normalizer.release_fixed`). Gradients are
        clipped at norm 1.
        """
        cfg = self.config
        if self.norm is None:
            data = buffer.arrays()
            self.norm = Normalizer.from_arrays(data["obs"], data["next_obs"], self.layout.action_start)
        elif any(m is not None and bool(m.any()) for m in (self.norm.delta_fixed, self.norm.obs_fixed)):
            data = buffer.arrays()
            for dim in self.norm.release_fixed(data["obs"], data["next_obs"]):
                if self.log is not None:
                    self.log(f"world_model/released_fixed_dim_{dim}", 1.0)
        loss_cfg = WMTrainConfig(
            model=cfg.model,
            sparsity_weight=cfg.sparsity_weight,
            reward_weight=cfg.reward_weight,
            prediction_loss=cfg.prediction_loss,
        )
        slot_dims = self.layout.slot_dims
        self.model.train()
        sums: dict[str, float] = {}
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_rng)
            for i in range(updates):
                batch = buffer.sample(cfg.batch_size, self._rng)
                dense = self.model_age + i < cfg.dense_warmup
                loss, parts = world_model_loss(self.model, batch, self.norm, loss_cfg, slot_dims, dense=dense)
                self.optim.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optim.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            self._torch_rng = torch.get_rng_state()
        self.model.eval()
        self.model_updates += updates
        self.model_age += updates
        means = {k: v / max(updates, 1) for k, v in sums.items()}
        if self.log is not None:
            for k, v in means.items():
                self.log(f"world_model/{k}", v)
            self.log("world_model/fit_seconds", time.perf_counter() - start)
        return means

    def metrics(self, transitions: int = 1000, horizons: Sequence[int] = EVAL_HORIZONS) -> dict[str, float]:
        """The model judged on ``transitions`` fresh real transitions (random actions, unseen seeds): prediction
        error at 1/5/10 open-loop steps and local-graph SHD/F1/AUROC against the env's ``info["local_graph"]``
        (keys of :data:`cwm_rl.wm_evaluation.SUMMARY_KEYS`; graph keys only for models with a graph).

        The same random-policy probe for every agent and every point of a run, so the numbers are comparable along
        a learning curve and across agents. Empty before the first fit. Leaves torch's global random stream as it
        was, so evaluating never changes a run's training.

        Raises:
            InvalidArgumentError: ``transitions`` is below :func:`min_eval_transitions` (no window to judge).
        """
        if transitions < min_eval_transitions(horizons):
            raise InvalidArgumentError(
                f"transitions={transitions} cannot judge a world model: it needs >= {min_eval_transitions(horizons)} "
                f"(spread over {EVAL_ENVS} random-policy sub-envs, the first must run one {max(horizons)}-step window)"
            )
        if not self.ready:
            return {}
        from cwm_rl.data import TransitionWindows, collect
        from cwm_rl.wm_evaluation import SUMMARY_KEYS, evaluate_windows

        window = max(horizons)
        layout = self.layout
        # Forked: the evaluation data's iterator draws from torch's global random stream, which the agent's learner
        # (SB3's sampling in Dyna) also uses, so how often a run is evaluated must not change its training.
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
            seed = PROBE_SEED_OFFSET + self.seed * 1_000 + self.model_updates % 1_000
            kwargs = {"seed": seed, "num_envs": EVAL_ENVS, "env_kwargs": self.env_kwargs}
            collect(layout.env_id, transitions, Path(tmp) / "probe", **kwargs)
            ds = TransitionWindows(Path(tmp) / "probe", window, stride=window)
            out = evaluate_windows(self.model, self.norm, ds, list(layout.slot_dims), layout.slot_names, horizons)
        return {k: float(out[k]) for k in SUMMARY_KEYS if k in out}

    def state(self) -> dict[str, Any]:
        """Everything :meth:`load_state` restores: weights, optimiser, normaliser, update counts, resets, torch
        stream."""
        return {
            "model_state": self.model.state_dict(),
            "optim_state": self.optim.state_dict(),
            "normalizer": self.norm.state() if self.norm is not None else None,
            "model_updates": self.model_updates,
            "model_age": self.model_age,
            "resets": self.resets,
            "born_at": self.born_at,
            "torch_rng": self._torch_rng,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned (the model is left in eval mode)."""
        self.model.load_state_dict(state["model_state"])
        self.optim.load_state_dict(state["optim_state"])
        self.norm = Normalizer.from_state(state["normalizer"]) if state["normalizer"] is not None else None
        self.model_updates = int(state["model_updates"])
        self.model_age = int(state.get("model_age", self.model_updates))  # checkpoints before resets: one model
        self.resets = int(state.get("resets", 0))
        self.born_at = state.get("born_at")
        self._torch_rng = state["torch_rng"]
        self.model.eval()


class LearnerViews:
    """The world-model views an agent that owns a :class:`WorldModelLearner` (as ``self.learner``) exposes, one
    definition for the MPC and the Dyna agent (the evaluator and planners read them), and how such an agent pickles
    for an exact resume (:mod:`cwm_rl.agents.snapshot`): whole, except its ``log`` sink (a TensorBoard writer),
    which the training script binds again."""

    learner: WorldModelLearner
    log: Callable[[str, float, int], None] | None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "log": None}

    @property
    def model(self) -> nn.Module:
        """The world model."""
        return self.learner.model

    @property
    def optim(self) -> torch.optim.Optimizer:
        """The world model's optimiser."""
        return self.learner.optim

    @property
    def norm(self) -> Normalizer | None:
        """The world model's normaliser (None before the first fit)."""
        return self.learner.norm

    @property
    def model_updates(self) -> int:
        """World-model gradient steps taken so far."""
        return self.learner.model_updates

    @property
    def model_ready(self) -> bool:
        """True once the world model has been fitted (before that the agent does without it)."""
        return self.learner.ready


def vector_env_transitions(
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    info: dict[str, Any],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One step of a suite env's native vector env (:func:`cwm_rl.data.make_vector_env`, next-step autoreset) as a
    :class:`SequenceBuffer` step: the step after an episode's end is a reset, not a transition
    (``info["_local_graph"]`` False there).

    Returns:
        ``(step, valid, episode_end)`` for :meth:`SequenceBuffer.add`.
    """
    valid = np.asarray(info["_local_graph"], dtype=bool)
    ended = valid & (np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool))
    step = {
        "obs": obs,
        "action": np.asarray(action),
        "reward": np.asarray(reward, dtype=np.float32),
        "next_obs": next_obs,
        "terminated": np.asarray(terminated, dtype=bool),
        "local_graph": np.asarray(info["local_graph"], dtype=bool),
        "intervened": np.asarray(info["intervened"], dtype=bool),
    }
    return step, valid, ended


def sb3_transitions(
    last_obs: Any, local_vars: dict[str, Any], layout: EnvLayout
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One vector step of a Stable-Baselines3 off- or on-policy collection loop as a :class:`SequenceBuffer` step.

    ``last_obs`` is the algorithm's ``_last_obs`` (the observation the action was chosen from) and ``local_vars``
    the callback's ``self.locals`` (``new_obs``, ``rewards``, ``dones``, ``infos`` and the env actions,
    ``clipped_actions`` for on-policy algorithms, ``actions`` for off-policy ones). ``next_obs`` is the true next
    observation (``info["terminal_observation"]`` when the sub-env was reset), ``terminated`` excludes time-limit
    truncations, and a step whose ``info`` carries no ``"local_graph"`` is marked invalid.

    Returns:
        ``(step, valid, episode_end)`` for :meth:`SequenceBuffer.add`.
    """
    new_obs = np.asarray(local_vars["new_obs"], dtype=np.float32)
    n = new_obs.shape[0]
    infos = local_vars["infos"]
    dones = np.asarray(local_vars["dones"], dtype=bool).reshape(n)
    actions = np.asarray(local_vars["clipped_actions"] if "clipped_actions" in local_vars else local_vars["actions"])
    actions = actions.reshape(n).astype(np.int64) if layout.discrete else actions.reshape(n, -1).astype(np.float32)
    next_obs = new_obs.reshape(n, -1).copy()
    terminated = np.zeros(n, dtype=bool)
    graphs = np.zeros((n, *layout.graph_shape), dtype=bool)
    intervened = np.zeros((n, len(layout.slot_names)), dtype=bool)
    valid = np.zeros(n, dtype=bool)
    for i, info in enumerate(infos):
        if dones[i] and "terminal_observation" in info:
            next_obs[i] = np.asarray(info["terminal_observation"], dtype=np.float32).reshape(-1)
        terminated[i] = dones[i] and not info.get("TimeLimit.truncated", False)
        if "local_graph" in info:
            graphs[i] = info["local_graph"]
            intervened[i] = info.get("intervened", False)
            valid[i] = True
    step = {
        "obs": np.array(last_obs, dtype=np.float32).reshape(n, -1),
        "action": actions,
        "reward": np.asarray(local_vars["rewards"], dtype=np.float32).reshape(n),
        "next_obs": next_obs,
        "terminated": terminated,
        "local_graph": graphs,
        "intervened": intervened,
    }
    return step, valid, dones


__all__ = [
    "EVAL_ENVS",
    "EVAL_HORIZONS",
    "PROBE_SEED_OFFSET",
    "EnvLayout",
    "LearnerConfig",
    "LearnerViews",
    "WorldModelLearner",
    "min_eval_transitions",
    "sb3_transitions",
    "vector_env_transitions",
]
