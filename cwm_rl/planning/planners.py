"""Trajectory optimisers for model-predictive control: CEM, iCEM, MPPI and categorical CEM.

A model-based agent calls :meth:`Planner.plan` once per real env step with ``evaluate``, a function that scores
candidate action sequences by imagined rollouts in a learned world model. The planner searches over sequences
of ``horizon`` actions, returns only the first action of its solution (receding horizon) and keeps the solution,
shifted by one step, as the warm start of the next call.

Everything is batched: ``batch`` independent problems (one per vectorised env) times ``population`` candidates
go to ``evaluate`` in a single call per iteration, with no Python loop over either. Randomness comes from one
``torch.Generator`` per planner, so the same seed gives identical plans.

Which action is returned follows the literature of each method:

* CEM (PETS, Chua et al. 2018): the first action of the final **mean** — an average over elites, robust to one
  sequence that a learned model over-rates.
* iCEM (Pinneri et al. 2020): the first action of the **best sequence** evaluated in any iteration (the paper's
  "execute best action"; the current mean is added as a candidate in the last iteration so it can win too).
* MPPI (Williams et al. 2017; TD-MPC, mbrl-lib): the first action of the return-weighted **mean**.
* Categorical CEM: the most probable first action of the final per-step **probabilities** — the elites'
  consensus (the discrete analogue of the CEM mean), for the same robustness to a single over-rated sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.planning.config import AUTO, PLANNERS, PlannerConfig, validate_config

Evaluate = Callable[[torch.Tensor], torch.Tensor]
"""``evaluate(actions) -> returns``: ``actions`` is ``(batch, population, horizon, action_dim)`` float32 (Box) or
``(batch, population, horizon)`` int64 (Discrete); ``returns`` is ``(batch, population)`` predicted total return."""

PROB_FLOOR_MASS = 0.01
"""Categorical CEM: this much probability mass is spread uniformly after every refit, so no action reaches 0."""

WARM_UNIFORM_MIX = 0.5
"""Categorical CEM: the warm start is this mix of uniform and the shifted probabilities. The probabilities are the
categorical's only parameter, so this plays the role of resetting the std in the Gaussian planners: keep the
previous preference but restore exploration (a near one-hot warm start would only re-sample the old plan)."""

__all__ = [
    "CEM",
    "ICEM",
    "MPPI",
    "PLANNERS",
    "CategoricalCEM",
    "Evaluate",
    "Planner",
    "PlannerConfig",
    "colored_noise",
    "make_planner",
]


class Planner:
    """Base class: config and space checks, seeding, batched evaluation with shape checks, warm-start resets.

    Subclasses set :attr:`name` and :attr:`discrete` and implement :meth:`_plan`, :meth:`_reset_rows` and
    :attr:`initial_solution`. ``config.name`` is only used by :func:`make_planner`; a subclass constructed
    directly runs its own algorithm whatever the name says.

    Attributes:
        action_space: The single-env action space (``Box`` of shape ``(action_dim,)`` or ``Discrete``).
        config: The validated config.
        batch: Number of independent planning problems.
        last_plan: The solution of the last :meth:`plan` call, ``(batch, horizon, action_dim)`` float32 (Box) or
            ``(batch, horizon)`` int64 (Discrete) in action-space values; ``None`` before the first call.
    """

    name: ClassVar[str] = ""
    discrete: ClassVar[bool] = False

    def __init__(
        self,
        action_space: spaces.Space[Any],
        config: PlannerConfig,
        batch: int = 1,
        seed: int | None = None,
    ) -> None:
        """Check the config, the space and the arguments, and seed the generator.

        Args:
            action_space: Single-env action space: ``Box`` (1-D, finite bounds) or ``Discrete``.
            config: Planner settings.
            batch: Number of problems planned at once (the number of vectorised envs).
            seed: Seed of the planner's ``torch.Generator``; ``None`` draws a fresh one.

        Raises:
            InvalidArgumentError: Bad config, unsupported or mismatched action space, bad batch or seed.
        """
        validate_config(config)
        _check_space(action_space, self.name, self.discrete)
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise InvalidArgumentError(f"planner batch must be an integer >= 1 (number of envs), got {batch!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise InvalidArgumentError(f"planner seed must be an integer or None, got {seed!r}")
        self.action_space = action_space
        self.config = config
        self.batch = int(batch)
        self.horizon = config.horizon
        self.population = config.population
        self.n_elites = max(1, min(self.population, round(config.elite_fraction * self.population)))
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(seed))
        self.last_plan: np.ndarray | None = None
        self._setup()
        self.reset()

    def plan(self, evaluate: Evaluate) -> np.ndarray:
        """Optimise all ``batch`` problems at once and return their first actions.

        ``evaluate`` runs under ``torch.no_grad()`` and gets a fresh tensor each call. It always receives exactly
        ``population`` candidates per row.

        Args:
            evaluate: Scores candidates; see :data:`Evaluate`.

        Returns:
            ``(batch, action_dim)`` float32 inside the Box bounds, or ``(batch,)`` int64 Discrete actions.

        Raises:
            InvalidArgumentError: ``evaluate`` is not callable.
            TypeError: ``evaluate`` returned something other than a tensor.
            ValueError: ``evaluate`` returned the wrong shape or non-finite values (a model bug).
        """
        if not callable(evaluate):
            raise InvalidArgumentError(f"plan() needs a callable evaluate(actions) -> returns, got {evaluate!r}")
        with torch.no_grad():
            return self._plan(evaluate)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the warm start of the rows where ``mask`` is True (all rows if ``None``): those envs reset.

        Args:
            mask: Boolean array of shape ``(batch,)``, or ``None``.

        Raises:
            InvalidArgumentError: ``mask`` is not a boolean array of shape ``(batch,)``.
        """
        if mask is None:
            rows = torch.ones(self.batch, dtype=torch.bool)
        else:
            array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            if array.dtype != np.bool_ or array.shape != (self.batch,):
                raise InvalidArgumentError(
                    f"reset mask must be a boolean array of shape ({self.batch},), got {array.dtype} {array.shape}"
                )
            rows = torch.from_numpy(array.copy())
        self._reset_rows(rows)

    @property
    def initial_solution(self) -> np.ndarray:
        """What the next :meth:`plan` starts from (a copy): the Gaussian mean or the categorical probabilities."""
        raise NotImplementedError

    def _setup(self) -> None:
        """Build the distribution state (called once by ``__init__`` after all checks passed)."""
        raise NotImplementedError

    def _plan(self, evaluate: Evaluate) -> np.ndarray:
        raise NotImplementedError

    def _reset_rows(self, rows: torch.Tensor) -> None:
        raise NotImplementedError

    def _evaluate(self, evaluate: Evaluate, actions: torch.Tensor) -> torch.Tensor:
        """Call ``evaluate`` on a copy of ``actions`` and check it returned ``(batch, population)`` finite floats."""
        returns = evaluate(actions.clone())
        expected = tuple(actions.shape[:2])
        if not isinstance(returns, torch.Tensor):
            raise TypeError(f"evaluate must return a torch.Tensor of shape {expected}, got {type(returns).__name__}")
        if tuple(returns.shape) != expected:
            raise ValueError(
                f"evaluate returned shape {tuple(returns.shape)}; expected (batch, population) = {expected} "
                f"for actions of shape {tuple(actions.shape)}"
            )
        returns = returns.detach().to(device="cpu", dtype=torch.float32)
        bad = int((~torch.isfinite(returns)).sum())
        if bad:
            raise ValueError(
                f"evaluate returned {bad} of {returns.numel()} predicted returns as NaN or inf; "
                "the world model or reward head produced non-finite values"
            )
        return returns

    def _top(self, returns: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best candidates per row (best first) and their returns."""
        values, index = returns.topk(k, dim=1)
        return _gather_rows(candidates, index), values


class _GaussianPlanner(Planner):
    """Continuous planners: a diagonal Gaussian over action sequences, samples clipped to the Box."""

    def _setup(self) -> None:
        self._low = torch.as_tensor(np.asarray(self.action_space.low, dtype=np.float32))
        self._high = torch.as_tensor(np.asarray(self.action_space.high, dtype=np.float32))
        self._center = (self._low + self._high) / 2
        half_range = (self._high - self._low) / 2
        self._std0 = self.config.init_std * half_range
        self._min_std = self.config.min_std * half_range
        self.action_dim = int(self._low.numel())
        self._mean = self._center.expand(self.batch, self.horizon, self.action_dim).clone()

    @property
    def initial_solution(self) -> np.ndarray:
        """The mean ``(batch, horizon, action_dim)`` the next :meth:`plan` starts from (a copy)."""
        return self._mean.numpy().copy()

    def _reset_rows(self, rows: torch.Tensor) -> None:
        self._mean[rows] = self._center

    def _initial_std(self) -> torch.Tensor:
        """The std of each plan's first iteration: ``init_std`` of the half range (reset every call, as in PETS)."""
        return self._std0.expand(self.batch, self.horizon, self.action_dim).clone()

    def _clip(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(actions, self._low), self._high)

    def _sample(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` clipped Gaussian sequences per row, ``(batch, n, horizon, action_dim)``; white noise."""
        noise = torch.randn(self.batch, n, self.horizon, self.action_dim, generator=self._generator)
        return self._clip(mean[:, None] + std[:, None] * noise)

    def _refit(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CEM update: elite mean and std, smoothed by ``momentum``; std floored at ``min_std``."""
        m = self.config.momentum
        new_mean = m * mean + (1 - m) * elites.mean(dim=1)
        new_std = m * std + (1 - m) * elites.std(dim=1, unbiased=False)
        return new_mean, torch.maximum(new_std, self._min_std)

    def _finish(self, mean: torch.Tensor, solution: torch.Tensor) -> np.ndarray:
        """Record ``solution``, keep the shifted ``mean`` as warm start, return the first actions."""
        solution = self._clip(solution)
        self.last_plan = solution.numpy().astype(np.float32, copy=True)
        if self.config.warm_start:
            self._mean = _shift(mean, self._center)
        else:
            self._reset_rows(torch.ones(self.batch, dtype=torch.bool))
        return self.last_plan[:, 0].copy()


class CEM(_GaussianPlanner):
    """Cross-entropy method over action sequences (PETS): white Gaussian samples, refit to the elites.

    Returns the first action of the final mean (as PETS does).
    """

    name = "cem"

    def _plan(self, evaluate: Evaluate) -> np.ndarray:
        mean, std = self._mean.clone(), self._initial_std()
        for _ in range(self.config.iterations):
            candidates = self._sample(mean, std, self.population)
            elites, _ = self._top(self._evaluate(evaluate, candidates), candidates, self.n_elites)
            mean, std = self._refit(mean, std, elites)
        return self._finish(mean, mean)


class ICEM(_GaussianPlanner):
    """Improved CEM (Pinneri et al. 2020): colored noise, kept elites, mean as a candidate, best action executed.

    * Samples are ``mean + std * colored_noise`` (power spectrum ``1 / f**noise_beta`` along the horizon), which
      gives smoother, more exploratory sequences than white noise.
    * The best ``keep_elites`` fraction of the elites is carried into the next iteration; after a plan they are
      shifted by one step (last step: the Box center) and carried into the next plan's first iteration.
    * In the last iteration the current mean is one of the candidates.
    * The population stays fixed (the paper's optional decay is left out) so ``evaluate`` sees one shape.

    Returns the first action of the best sequence evaluated in any iteration (the paper's choice).
    """

    name = "icem"

    def _setup(self) -> None:
        super()._setup()
        wanted = round(self.config.keep_elites * self.n_elites)
        self.n_keep = max(0, min(wanted, self.n_elites, self.population - 1))  # one slot left for the mean
        self._kept: torch.Tensor | None = None  # (batch, n_keep, horizon, action_dim), shifted elites
        self._kept_valid = torch.zeros(self.batch, dtype=torch.bool)  # rows whose kept elites survive

    def _reset_rows(self, rows: torch.Tensor) -> None:
        super()._reset_rows(rows)
        self._kept_valid[rows] = False

    def _sample(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        noise = colored_noise((self.batch, n, self.action_dim), self.horizon, self.config.noise_beta, self._generator)
        return self._clip(mean[:, None] + std[:, None] * noise.transpose(-1, -2))

    def _plan(self, evaluate: Evaluate) -> np.ndarray:
        mean, std = self._mean.clone(), self._initial_std()
        kept, valid = self._kept, self._kept_valid
        best_return = torch.full((self.batch,), -math.inf)
        best = mean.clone()
        last = self.config.iterations - 1
        for iteration in range(self.config.iterations):
            candidates = self._sample(mean, std, self.population)
            if kept is not None and self.n_keep > 0:
                head = candidates[:, : self.n_keep]
                candidates[:, : self.n_keep] = torch.where(valid[:, None, None, None], kept, head)
            if iteration == last:
                candidates[:, -1] = self._clip(mean)
            elites, values = self._top(self._evaluate(evaluate, candidates), candidates, self.n_elites)
            improved = values[:, 0] > best_return
            best_return = torch.where(improved, values[:, 0], best_return)
            best = torch.where(improved[:, None, None], elites[:, 0], best)
            mean, std = self._refit(mean, std, elites)
            kept, valid = elites[:, : self.n_keep], torch.ones(self.batch, dtype=torch.bool)
        first = self._finish(mean, best)
        if self.config.warm_start and kept is not None:
            self._kept, self._kept_valid = _shift(kept, self._center), valid
        return first


class MPPI(_GaussianPlanner):
    """Model-predictive path integral control (Williams et al. 2017, as in TD-MPC / mbrl-lib).

    Each iteration weights all candidates by ``softmax((R - max R) / (temperature * std(R)))`` — returns
    standardised over the population, so ``temperature`` does not depend on the reward scale — and sets the mean
    to the weighted average and the std to the weighted std (floored at ``min_std``). ``momentum`` and
    ``elite_fraction`` are not used. Returns the first action of the final weighted mean.
    """

    name = "mppi"

    def _plan(self, evaluate: Evaluate) -> np.ndarray:
        mean, std = self._mean.clone(), self._initial_std()
        for _ in range(self.config.iterations):
            candidates = self._sample(mean, std, self.population)
            weights = self._weights(self._evaluate(evaluate, candidates))[:, :, None, None]
            mean = (weights * candidates).sum(dim=1)
            spread = (weights * (candidates - mean[:, None]) ** 2).sum(dim=1).sqrt()
            std = torch.maximum(spread, self._min_std)
        return self._finish(mean, mean)

    def _weights(self, returns: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``(batch, population)``; equal returns give equal weights."""
        scale = returns.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-12) * self.config.temperature
        return torch.softmax((returns - returns.max(dim=1, keepdim=True).values) / scale, dim=1)


class CategoricalCEM(Planner):
    """CEM for ``Discrete`` actions: one categorical distribution per step, refit to elite action frequencies.

    ``probs = momentum * probs + (1 - momentum) * elite_frequency``, then :data:`PROB_FLOOR_MASS` is spread
    uniformly so no action reaches probability 0. Returns the most probable first action of the final
    probabilities (ties: the lowest action): the elites' consensus, like the CEM mean, which is more robust to a
    single sequence over-rated by an imperfect model than the best sample. The warm start mixes the shifted
    probabilities with uniform (:data:`WARM_UNIFORM_MIX`).
    """

    name = "categorical-cem"
    discrete = True

    def _setup(self) -> None:
        self.n_actions = int(self.action_space.n)
        self.start = int(self.action_space.start)
        self._uniform = torch.full((self.n_actions,), 1.0 / self.n_actions)
        self._probs = self._uniform.expand(self.batch, self.horizon, self.n_actions).clone()

    @property
    def initial_solution(self) -> np.ndarray:
        """The probabilities ``(batch, horizon, n)`` the next :meth:`plan` starts from (a copy)."""
        return self._probs.numpy().copy()

    def _reset_rows(self, rows: torch.Tensor) -> None:
        self._probs[rows] = self._uniform

    def _plan(self, evaluate: Evaluate) -> np.ndarray:
        probs, m = self._probs.clone(), self.config.momentum
        for _ in range(self.config.iterations):
            index = torch.multinomial(
                probs.reshape(-1, self.n_actions), self.population, replacement=True, generator=self._generator
            )
            index = index.view(self.batch, self.horizon, self.population).transpose(1, 2)  # (batch, pop, horizon)
            elites, _ = self._top(self._evaluate(evaluate, index + self.start), index, self.n_elites)
            frequency = torch.nn.functional.one_hot(elites, self.n_actions).to(torch.float32).mean(dim=1)
            probs = (1 - PROB_FLOOR_MASS) * (m * probs + (1 - m) * frequency) + PROB_FLOOR_MASS * self._uniform
        plan = probs.argmax(dim=-1) + self.start
        self.last_plan = plan.numpy().astype(np.int64, copy=True)
        if self.config.warm_start:
            self._probs = WARM_UNIFORM_MIX * self._uniform + (1 - WARM_UNIFORM_MIX) * _shift(probs, self._uniform)
        else:
            self._reset_rows(torch.ones(self.batch, dtype=torch.bool))
        return self.last_plan[:, 0].copy()


_CLASSES: dict[str, type[Planner]] = {cls.name: cls for cls in (CEM, ICEM, MPPI, CategoricalCEM)}
assert tuple(_CLASSES) == PLANNERS


def make_planner(
    action_space: spaces.Space[Any],
    config: PlannerConfig,
    batch: int = 1,
    seed: int | None = None,
) -> Planner:
    """Build the planner named by ``config.name`` (``"auto"``: categorical CEM for Discrete, CEM for Box).

    Args:
        action_space: Single-env action space.
        config: Planner settings.
        batch: Number of problems planned at once.
        seed: Generator seed; ``None`` draws a fresh one.

    Returns:
        The planner.

    Raises:
        InvalidArgumentError: Unknown name, bad config, or a planner that does not fit the action space.
    """
    validate_config(config)
    name = config.name
    if name == AUTO:
        name = "categorical-cem" if isinstance(action_space, spaces.Discrete) else "cem"
    return _CLASSES[name](action_space, config, batch=batch, seed=seed)


def colored_noise(
    shape: tuple[int, ...], horizon: int, beta: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise ``(*shape, horizon)`` with power spectrum ``1 / f**beta`` along the last axis, unit variance.

    Complex Gaussian Fourier coefficients are scaled by ``f**(-beta / 2)`` (the zero frequency gets the lowest
    nonzero one, ``1 / horizon``) and transformed back with ``irfft``. The variance of every step is known in
    closed form and divided out, so each step is exactly ``N(0, 1)``; ``beta = 0`` gives white noise.

    Args:
        shape: Leading dimensions (independent sequences).
        horizon: Length of each sequence.
        beta: Spectrum exponent, >= 0.
        generator: Random generator (for reproducibility).

    Returns:
        float32 tensor ``(*shape, horizon)``.
    """
    n_freq = horizon // 2 + 1
    freq = torch.arange(n_freq, dtype=torch.float64) / horizon
    freq[0] = 1.0 / horizon
    # Real and imaginary parts get variance 1/2 except at the zero (and, for even horizons, the Nyquist)
    # frequency, which are real only: with beta = 0 this is exactly the DFT of white noise.
    real_only = torch.zeros(n_freq, dtype=torch.bool)
    real_only[0] = True
    if horizon % 2 == 0:
        real_only[-1] = True
    amplitude = freq ** (-beta / 2) * torch.where(real_only, 1.0, math.sqrt(0.5))
    real = torch.randn(*shape, n_freq, generator=generator, dtype=torch.float64)
    imag = torch.randn(*shape, n_freq, generator=generator, dtype=torch.float64) * (~real_only)
    signal = torch.fft.irfft(torch.complex(real, imag) * amplitude, n=horizon, dim=-1)
    # Each step is (1/N) * [sum of real-only terms amp * a + sum over the others 2 * Re(amp * (a + ib) * phase)]:
    # a real-only term adds amp^2 to N^2 * variance, any other 4 * amp^2 (amp already holds the sqrt(1/2)).
    weight = torch.where(real_only, 1.0, 4.0)
    variance = (weight * amplitude**2).sum() / horizon**2
    return (signal / variance.sqrt()).to(torch.float32)


def _check_space(space: spaces.Space[Any], name: str, discrete: bool) -> None:
    """Raise :class:`InvalidArgumentError` unless ``space`` is a supported space of the kind the planner needs."""
    if isinstance(space, spaces.Discrete):
        if not discrete:
            raise InvalidArgumentError(
                f"planner {name!r} needs a Box action space, got {space}; use 'categorical-cem' (or 'auto')"
            )
        return
    if not isinstance(space, spaces.Box):
        raise InvalidArgumentError(
            f"planning supports Discrete and 1-D Box action spaces, got {type(space).__name__}; "
            "wrap the env to flatten or discretise its actions"
        )
    if discrete:
        raise InvalidArgumentError(
            f"planner {name!r} needs a Discrete action space, got {space}; use 'cem', 'icem' or 'mppi' (or 'auto')"
        )
    if len(space.shape) != 1 or space.shape[0] < 1:
        raise InvalidArgumentError(
            f"planning needs a 1-D Box action space (action_dim,), got shape {space.shape}; flatten the actions"
        )
    if not np.issubdtype(space.dtype, np.floating):
        raise InvalidArgumentError(f"planning needs a float Box action space, got dtype {space.dtype}")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise InvalidArgumentError(
            f"planning needs finite Box bounds to scale its search, got {space}; clip or rescale the actions"
        )


def _shift(sequences: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Drop the first step of ``(..., horizon, d)`` sequences and append ``fill`` (``(d,)``) as the last step."""
    tail = fill.expand_as(sequences[..., :1, :])
    return torch.cat([sequences[..., 1:, :], tail], dim=-2)


def _gather_rows(candidates: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select ``index`` ``(batch, k)`` along dim 1 of ``candidates`` ``(batch, population, ...)``."""
    extra = candidates.shape[2:]
    index = index.view(*index.shape, *([1] * len(extra))).expand(*index.shape, *extra)
    return candidates.gather(1, index)
