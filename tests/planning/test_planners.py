"""Planners: find known optima, respect the action space, warm-start and reset per row, seed, reject bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.planning import (
    CEM,
    ICEM,
    MPPI,
    PLANNERS,
    CategoricalCEM,
    PlannerConfig,
    colored_noise,
    make_planner,
)
from cwm_rl.planning.planners import PROB_FLOOR_MASS, WARM_UNIFORM_MIX

CONTINUOUS = ("cem", "icem", "mppi")
BOX = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
# Budgets per planner that reach the optimum of the quadratic below; MPPI's default (temperature 1 on
# standardised returns) averages over many samples, so it moves more slowly and gets more iterations.
BUDGET = {"cem": {"iterations": 8}, "icem": {"iterations": 8}, "mppi": {"iterations": 12}}


def quadratic(target: torch.Tensor):
    """``evaluate`` whose optimum is ``target`` ``(batch, horizon, action_dim)``: ``-||actions - target||^2``."""

    def evaluate(actions: torch.Tensor) -> torch.Tensor:
        return -((actions - target[:, None]) ** 2).sum(dim=(-1, -2))

    return evaluate


def recording(evaluate):
    """Wrap ``evaluate`` to keep every candidate tensor it receives."""
    seen: list[torch.Tensor] = []

    def wrapped(actions: torch.Tensor) -> torch.Tensor:
        seen.append(actions.clone())
        return evaluate(actions)

    return wrapped, seen


def matches(codes: torch.Tensor, start: int = 0):
    """Discrete ``evaluate``: number of steps where the action equals the per-row, per-step ``codes``."""

    def evaluate(actions: torch.Tensor) -> torch.Tensor:
        return (actions == codes[:, None] + start).sum(dim=-1).to(torch.float32)

    return evaluate


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_planner_finds_the_optimum_per_row(name):
    target = torch.tensor(np.random.default_rng(1).uniform(-0.8, 0.8, (3, 4, 2)), dtype=torch.float32)
    config = PlannerConfig(name=name, horizon=4, population=128, **BUDGET[name])
    planner = make_planner(BOX, config, batch=3, seed=0)
    action = planner.plan(quadratic(target))
    assert action.shape == (3, 2) and action.dtype == np.float32
    # 0.1 = 5% of the range; min_std keeps samples spread by >= 0.05 around the mean, so a best-sample planner
    # (iCEM) cannot be much closer than that, and the means of CEM/MPPI land within ~0.04 over seeds 0..19.
    np.testing.assert_allclose(action, target[:, 0].numpy(), atol=0.1)
    assert planner.last_plan.shape == (3, 4, 2)
    np.testing.assert_allclose(planner.last_plan, target.numpy(), atol=0.2)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_optimum_outside_the_box_is_clipped_to_the_bound(name):
    box = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([0.0, 2.0], np.float32))
    target = torch.tensor([[1.0, -1.0]]).expand(2, 3, 2)  # beyond high[0] and below low[1]
    wrapped, seen = recording(quadratic(target))
    # init_std 1 (the whole half range) so many samples clip onto the bound; MPPI gets a colder temperature to
    # move as far as CEM in the same 8 iterations. Over seeds 0..19 all land within 0.05 of the corner.
    config = PlannerConfig(name=name, horizon=3, population=128, iterations=8, init_std=1.0, temperature=0.3)
    action = make_planner(box, config, batch=2, seed=0).plan(wrapped)
    low, high = torch.from_numpy(box.low), torch.from_numpy(box.high)
    for actions in seen:
        assert actions.shape == (2, 128, 3, 2) and actions.dtype == torch.float32
        assert bool((actions >= low).all() and (actions <= high).all())
    assert all(box.contains(a) for a in action)
    np.testing.assert_allclose(action, [[0.0, 0.0], [0.0, 0.0]], atol=0.05)


def test_categorical_cem_finds_the_code_per_row():
    codes = torch.tensor([[2, 0, 4, 1, 3], [0, 0, 1, 2, 2], [4, 3, 2, 1, 0]])
    planner = make_planner(spaces.Discrete(5), PlannerConfig(name="auto", horizon=5, population=64), batch=3, seed=0)
    assert isinstance(planner, CategoricalCEM)
    action = planner.plan(matches(codes))
    assert action.shape == (3,) and action.dtype == np.int64
    np.testing.assert_array_equal(action, codes[:, 0].numpy())
    np.testing.assert_array_equal(planner.last_plan, codes.numpy())


def test_categorical_cem_with_shifted_start_samples_inside_the_space():
    space = spaces.Discrete(4, start=-2)
    codes = torch.tensor([[3, 1, 0], [0, 2, 3]])
    wrapped, seen = recording(matches(codes, start=-2))
    planner = CategoricalCEM(space, PlannerConfig(horizon=3, population=32, iterations=4), batch=2, seed=0)
    action = planner.plan(wrapped)
    for actions in seen:
        assert actions.shape == (2, 32, 3) and actions.dtype == torch.int64
        assert int(actions.min()) >= -2 and int(actions.max()) <= 1
    assert {int(a) for a in torch.cat([s.flatten() for s in seen])} == {-2, -1, 0, 1}  # all actions explored
    np.testing.assert_array_equal(action, codes[:, 0].numpy() - 2)
    assert all(space.contains(int(a)) for a in action)


def test_categorical_warm_start_keeps_a_shifted_preference_and_no_zero_probability():
    codes = torch.tensor([[1, 2, 0]])
    planner = CategoricalCEM(spaces.Discrete(3), PlannerConfig(horizon=3, population=16, iterations=10), seed=0)
    np.testing.assert_allclose(planner.initial_solution, np.full((1, 3, 3), 1 / 3))
    planner.plan(matches(codes))
    probs = planner.initial_solution
    assert (probs > 0).all() and np.allclose(probs.sum(-1), 1.0)
    refit = (probs - WARM_UNIFORM_MIX / 3) / (1 - WARM_UNIFORM_MIX)  # the shifted probabilities before the mix
    assert refit.min() >= PROB_FLOOR_MASS / 3 - 1e-6  # the floor survives 10 refits that never pick actions 0, 1
    np.testing.assert_array_equal(probs[0, :-1].argmax(-1), planner.last_plan[0, 1:])  # shifted plan preferred
    assert probs[0, 0, 2] > 0.6  # half uniform, half the (converged) shifted step
    np.testing.assert_allclose(probs[0, -1], np.full(3, 1 / 3))  # the new last step knows nothing
    planner.reset(np.array([True]))
    np.testing.assert_allclose(planner.initial_solution, np.full((1, 3, 3), 1 / 3))


@pytest.mark.parametrize("name", CONTINUOUS)
def test_warm_start_is_the_shifted_solution_and_reset_clears_only_masked_rows(name):
    target = torch.tensor(np.random.default_rng(2).uniform(-0.5, 0.9, (3, 4, 2)), dtype=torch.float32)
    planner = make_planner(BOX, PlannerConfig(name=name, horizon=4, population=128, **BUDGET[name]), batch=3, seed=0)
    assert np.array_equal(planner.initial_solution, np.zeros((3, 4, 2), np.float32))  # Box center
    planner.plan(quadratic(target))
    warm = planner.initial_solution
    if name != "icem":  # CEM and MPPI return their mean, which is what gets shifted
        np.testing.assert_allclose(warm[:, :-1], planner.last_plan[:, 1:], atol=1e-6)
    np.testing.assert_allclose(warm[:, :-1], target[:, 1:].numpy(), atol=0.2)
    assert np.array_equal(warm[:, -1], np.zeros((3, 2)))
    planner.reset(np.array([True, False, True]))
    after = planner.initial_solution
    assert np.array_equal(after[[0, 2]], np.zeros((2, 4, 2))) and np.array_equal(after[1], warm[1])
    planner.reset()
    assert np.array_equal(planner.initial_solution, np.zeros((3, 4, 2)))


def test_warm_start_off_starts_every_plan_from_the_center():
    target = torch.full((1, 3, 2), 0.7)
    planner = CEM(BOX, PlannerConfig(horizon=3, population=32, iterations=3, warm_start=False), seed=0)
    planner.plan(quadratic(target))
    assert np.array_equal(planner.initial_solution, np.zeros((1, 3, 2)))


def test_first_iteration_samples_around_the_warm_start():
    target = torch.full((1, 4, 2), 0.6)
    config = PlannerConfig(horizon=4, population=256, iterations=5, init_std=0.05, min_std=0.01)
    planner = CEM(BOX, config, seed=0)
    for _ in range(6):  # the small std moves the mean slowly; the warm start carries progress across calls
        planner.plan(quadratic(target))
    warm = torch.from_numpy(planner.initial_solution)
    wrapped, seen = recording(quadratic(target))
    planner.plan(wrapped)
    first = seen[0].mean(dim=1)  # 256 samples with std 0.05: their mean is within ~0.01 of the warm start
    torch.testing.assert_close(first, warm, atol=0.02, rtol=0)
    assert float(warm[0, 0, 0]) > 0.3  # and that warm start has moved most of the way from 0 to the target


def test_icem_carries_shifted_elites_into_the_next_plan_except_for_reset_rows():
    target = torch.tensor(np.random.default_rng(3).uniform(-0.5, 0.5, (2, 5, 2)), dtype=torch.float32)
    evaluate = quadratic(target)
    config = PlannerConfig(name="icem", horizon=5, population=40, iterations=3, elite_fraction=0.25, keep_elites=0.5)
    planner = make_planner(BOX, config, batch=2, seed=0)
    assert isinstance(planner, ICEM) and planner.n_keep == 5
    wrapped, seen = recording(evaluate)
    planner.plan(wrapped)
    # the last iteration's final candidate is the mean refit from the earlier iterations
    torch.testing.assert_close(seen[-1][:, -1], replay_cem_mean(config, seen[:-1], evaluate))
    # the carried elites of one iteration open the next one
    torch.testing.assert_close(seen[1][:, :5], top(seen[0], evaluate, 5))
    shifted = torch.cat([top(seen[-1], evaluate, 5)[:, :, 1:], torch.zeros(2, 5, 1, 2)], dim=2)
    planner.reset(np.array([False, True]))
    wrapped, seen = recording(evaluate)
    planner.plan(wrapped)
    torch.testing.assert_close(seen[0][0, :5], shifted[0])  # kept row: the shifted elites come first
    assert not (seen[0][1, :5] == shifted[1]).all(dim=(-1, -2)).any()  # reset row: fresh samples only


def top(candidates: torch.Tensor, evaluate, k: int) -> torch.Tensor:
    """The ``k`` best candidates per row, best first."""
    index = evaluate(candidates).topk(k, dim=1).indices
    return torch.stack([candidates[b, index[b]] for b in range(candidates.shape[0])])


def replay_cem_mean(config: PlannerConfig, rounds: list[torch.Tensor], evaluate) -> torch.Tensor:
    """The CEM mean after refitting (with momentum) to the elites of each recorded round, from the center 0."""
    batch, population, horizon, dim = rounds[0].shape
    mean = torch.zeros(batch, horizon, dim)
    n_elites = round(config.elite_fraction * population)
    for candidates in rounds:
        mean = config.momentum * mean + (1 - config.momentum) * top(candidates, evaluate, n_elites).mean(dim=1)
    return mean


@pytest.mark.parametrize("name", PLANNERS)
def test_same_seed_same_plans_different_seed_different_samples(name):
    space = spaces.Discrete(4) if name == "categorical-cem" else BOX
    config = PlannerConfig(name=name, horizon=3, population=16, iterations=2)
    target = torch.full((2, 3, 2), 0.3)
    evaluate = matches(torch.ones(2, 3, dtype=torch.int64)) if name == "categorical-cem" else quadratic(target)

    def run(seed: int) -> tuple[list[np.ndarray], list[torch.Tensor]]:
        planner = make_planner(space, config, batch=2, seed=seed)
        wrapped, seen = recording(evaluate)
        return [planner.plan(wrapped) for _ in range(2)], seen

    actions_a, seen_a = run(7)
    actions_b, seen_b = run(7)
    _, seen_c = run(8)
    assert all(np.array_equal(a, b) for a, b in zip(actions_a, actions_b, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(seen_a, seen_b, strict=True))
    assert not torch.equal(seen_a[0], seen_c[0])


def test_auto_picks_by_action_space():
    config = PlannerConfig(name="auto", horizon=2, population=4, iterations=1)
    assert type(make_planner(BOX, config)) is CEM
    assert type(make_planner(spaces.Discrete(2), config)) is CategoricalCEM
    assert type(make_planner(BOX, PlannerConfig(name="mppi"))) is MPPI
    assert PLANNERS == ("cem", "icem", "mppi", "categorical-cem")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "cmaes", "unknown planner"),
        ("horizon", 0, "horizon"),
        ("population", 0, "population"),
        ("iterations", 0, "iterations"),
        ("horizon", 2.5, "horizon"),
        ("population", True, "population"),
        ("elite_fraction", 0.0, "elite_fraction"),
        ("elite_fraction", 1.5, "elite_fraction"),
        ("momentum", 1.0, "momentum"),
        ("init_std", 0.0, "init_std"),
        ("min_std", -0.1, "min_std"),
        ("noise_beta", float("nan"), "noise_beta"),
        ("keep_elites", 1.1, "keep_elites"),
        ("temperature", 0.0, "temperature"),
        ("warm_start", "yes", "warm_start"),
    ],
)
def test_bad_config_raises_one_line(field, value, message):
    config = PlannerConfig(**{field: value})
    with pytest.raises(InvalidArgumentError, match=message) as info:
        make_planner(BOX, config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "space", "message"),
    [
        ("cem", spaces.Discrete(3), "needs a Box"),
        ("mppi", spaces.Discrete(3), "needs a Box"),
        ("categorical-cem", BOX, "needs a Discrete"),
        ("auto", spaces.MultiDiscrete([2, 3]), "MultiDiscrete"),
        ("auto", spaces.Dict({"a": spaces.Discrete(2)}), "Dict"),
        ("icem", spaces.Box(-1, 1, (2, 2), np.float32), "1-D Box"),
        ("cem", spaces.Box(-np.inf, np.inf, (2,), np.float32), "finite"),
    ],
)
def test_planner_that_does_not_fit_the_space_raises(name, space, message):
    with pytest.raises(InvalidArgumentError, match=message):
        make_planner(space, PlannerConfig(name=name))


@pytest.mark.parametrize("bad", [0, -1, 1.0, True])
def test_bad_batch_raises(bad):
    with pytest.raises(InvalidArgumentError, match="batch"):
        make_planner(BOX, PlannerConfig(), batch=bad)


def test_bad_reset_mask_raises():
    planner = make_planner(BOX, PlannerConfig(horizon=2, population=4), batch=2)
    with pytest.raises(InvalidArgumentError, match="shape \\(2,\\)"):
        planner.reset(np.array([True, False, True]))
    with pytest.raises(InvalidArgumentError, match="boolean"):
        planner.reset(np.array([1, 0]))


@pytest.mark.parametrize("name", PLANNERS)
def test_evaluate_with_wrong_shape_or_nan_is_a_clear_error(name):
    space = spaces.Discrete(3) if name == "categorical-cem" else BOX
    planner = make_planner(space, PlannerConfig(name=name, horizon=2, population=8, iterations=1), batch=2)
    with pytest.raises(ValueError, match=r"expected \(batch, population\) = \(2, 8\)"):
        planner.plan(lambda actions: torch.zeros(2 * 8))
    with pytest.raises(ValueError, match="NaN"):
        planner.plan(lambda actions: torch.full((2, 8), float("nan")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        planner.plan(lambda actions: np.zeros((2, 8)))
    with pytest.raises(InvalidArgumentError, match="callable"):
        planner.plan(None)


def test_mppi_weights_follow_the_temperature():
    planner = MPPI(BOX, PlannerConfig(name="mppi", temperature=0.1))
    returns = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    weights = planner._weights(returns)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert weights[0, 2] > 0.99  # cold: nearly all weight on the best
    torch.testing.assert_close(weights[1], torch.full((3,), 1 / 3))  # equal returns: equal weights
    hot = MPPI(BOX, PlannerConfig(name="mppi", temperature=100.0))._weights(returns)
    assert float(hot[0].max() - hot[0].min()) < 0.01


def test_colored_noise_has_unit_variance_and_correlation_that_grows_with_beta():
    generator = torch.Generator().manual_seed(0)
    lag_one = {}
    for beta in (0.0, 2.0):
        for horizon in (1, 7, 12):
            noise = colored_noise((20000,), horizon, beta, generator)
            assert noise.shape == (20000, horizon) and noise.dtype == torch.float32
            torch.testing.assert_close(noise.std(dim=0), torch.ones(horizon), atol=0.03, rtol=0)
        lag_one[beta] = float(torch.corrcoef(torch.stack([noise[:, 3], noise[:, 4]]))[0, 1])
    assert abs(lag_one[0.0]) < 0.03  # white
    assert lag_one[2.0] > 0.5  # smooth along the horizon
