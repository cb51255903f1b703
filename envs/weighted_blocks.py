"""Weighted block pushing on a grid with ground-truth local causal graphs (after Ke et al. 2021's Physics env)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from cwm_rl.envs.base import CausalEnv, CausalVectorEnv, State, StepResult
from cwm_rl.envs.render import PALETTE as _PALETTE
from cwm_rl.envs.render import Canvas
from cwm_rl.envs.validation import check_float, check_int, check_probability
from cwm_rl.errors import InvalidArgumentError

MIN_GRID, MAX_GRID = 3, 12
MIN_OBJECTS, MAX_OBJECTS = 2, 8
# Weights are observed as float32: they must be positive and distinct float32 numbers (a larger one would read as
# inf, a smaller one as 0, and two that round to the same float32 would look equally heavy).
MIN_WEIGHT = float(np.finfo(np.float32).smallest_subnormal)  # about 1.4e-45
MAX_WEIGHT = float(np.finfo(np.float32).max)  # about 3.4e38
SLOT_WIDTH = 5  # x, y, weight, goal_x, goal_y

# Directions of a % 4: up, right, down, left (y grows upwards, like the rendered frame).
_DX = np.array([0, 1, 0, -1], dtype=np.int64)
_DY = np.array([1, 0, -1, 0], dtype=np.int64)
_STEPS = np.stack([_DX, _DY], axis=1)
_CODE = np.array([1, 32], dtype=np.int64)

# Uniforms consumed per step (fixed, so counterfactual replays see the same noise).
_U_INTERVENE, _U_OBJECT, _U_CELL, _U_GOAL = 0, 1, 2, 3
N_STEP_UNIFORMS = 4
# Per reset: one uniform per start cell and one per goal cell, fixed at the largest object count so the count does
# not depend on the kwargs (fewer objects read a prefix of each half).
N_RESET_UNIFORMS = 2 * MAX_OBJECTS

# How the suite registers this env: cwm/WeightedBlocks-v0 and its out-of-distribution twin.
SUITE_SPEC = {
    "name": "WeightedBlocks",
    "max_episode_steps": 100,
    "kwargs": {},
    # The weight order reversed (obj0 heaviest): a causal graph never seen in -v0, same observation shape/bounds.
    "ood_kwargs": {"weights": (3.0, 2.0, 1.0)},
}


class WeightedBlocksEnv(CausalEnv):
    """Objects with distinct weights on a grid; an object can push a lighter one, never a heavier one.

    ## Description
    After the Physics environment of Ke et al. (2021), "Systematic Evaluation of Causal Discovery in Visual
    Model Based Reinforcement Learning", on states instead of pixels. ``n_objects`` objects occupy distinct cells
    of a ``grid_size x grid_size`` grid. Each has a weight; the weights are distinct and **fixed per env
    instance** (as in Ke et al., where the weight order *is* the causal graph of the instance): ``weights`` sets
    them explicitly, ``weight_seed`` draws a permutation of ``1..n_objects``, and by default object ``i`` weighs
    ``i + 1`` (obj0 lightest). Each object's weight is part of its observation slot, so the agent can see it.
    The agent moves one object per step and must bring every object to its own goal cell.

    With probability ``intervention_prob`` per step an exogenous intervention re-spawns one object (uniform),
    after the agent's move: it is relocated to a cell drawn uniformly from the whole grid and gets a new goal
    cell drawn the same way (its weight is the instance's). The whole slot is re-drawn so that it has no parents
    that step, as the contract requires of an intervened slot. If another object occupies the new cell after
    the move, or another object has the new goal, the intervention is void this step (nothing changes, nothing
    is flagged).

    ## Action Space
    ``Discrete(4 * n_objects)``: action ``a`` moves object ``o = a // 4`` one cell in direction ``a % 4``
    (0 up, 1 right, 2 down, 3 left; up is +y). If the target cell is inside the grid and free, ``o`` moves.
    If it holds object ``p``, ``o`` is heavier than ``p`` and the cell beyond ``p`` is inside the grid and
    free, ``p`` is pushed one cell and ``o`` moves into ``p``'s cell. Otherwise nothing moves: walls block, a
    lighter (or equally heavy) object cannot push, and pushing two objects at once is not possible.

    ## Observation Space
    ``Box(5 * n_objects,)`` float32, one slot per object ``obj0 .. obj{n-1}``, each
    ``(x, y, weight, goal_x, goal_y)``. Positions and goals are cell coordinates in grid units,
    ``0 <= x, y <= grid_size - 1`` (integers stored as floats); ``weight`` lies between the smallest and the
    largest weight of the instance. Weights and goals are constant within an episode.

    ## Rewards
    Dense: ``-(sum over objects of the Manhattan distance to its goal) / (n_objects * 2 * grid_size)`` after
    every step (in ``(-1, 0]``), plus a bonus of ``+1`` on the step on which every object is on its goal.

    ## Starting State
    Start cells and goal cells are two independent uniform draws of ``n_objects`` distinct cells. If every
    object would start on its goal, the goals of obj0 and obj1 are swapped. Goals are not checked for
    reachability; with at least half of the grid free they are reachable in practice.

    ## Episode End
    Terminates when every object is on its goal; truncated at 100 steps by the registration.

    ## Arguments
    * ``grid_size`` (int in [3, 12], default 5).
    * ``n_objects`` (int in [2, 8], default 3, and at most ``grid_size**2 / 2``).
    * ``weights`` (``n_objects`` numbers in [1.4e-45, 3.4e38], distinct as float32, default None): the weight of
      each object. Weights are observed as float32, hence the positive float32 range and float32 distinctness.
    * ``weight_seed`` (int >= 0, default None): if given (and ``weights`` is not), the weights are a random
      permutation of ``1..n_objects`` drawn from this seed. ``weights`` and ``weight_seed`` are exclusive.
    * ``intervention_prob`` (float in [0, 1], default 0.0): probability of an exogenous relocation per step.

    ## Causal Graph
    Slots ``obj0 .. obj{n-1}``; the last column is the action. Let ``m`` be the object the action moves, ``T``
    its target cell, ``p`` the object in ``T`` (if any) and ``q`` the object in the cell beyond ``T`` (if any).
    Per transition, decided from the state at t:

    * Every object keeps its self-edge (its position persists; weight and goal are constant).
    * ``m <- action`` always; ``m <- p`` when ``T`` holds ``p`` (its position and weight decide the outcome);
      ``m <- q`` when, in addition, ``m`` is heavier than ``p`` and the cell beyond is inside the grid (a
      push attempt that ``q`` blocks).
    * A pushed object: ``p <- m, action``. A push attempt (``m`` heavier than ``p``, the cell beyond inside
      the grid) that ``q`` blocks: ``p <- q`` (given ``q``, ``p`` stays whatever ``m`` and the action are).
      A push that a wall or ``p``'s weight makes impossible leaves ``p`` with its self-edge only.
    * Every other object: self-edge only (no action edge: the action did not select it).
    * An intervened object has no parents that step (its row is all False). A void intervention gives that
      object's row every parent, because whether it is void depends on where every object ends up and on every
      goal.

    The global graph is complete: any object can push, block or be blocked by any other, and the action can
    select any of them. The weight order shows in the local graphs: push edges ``p <- m`` only ever point from
    a heavier to a lighter object.

    ## Version History
    * v0: initial version. ``cwm/WeightedBlocks-OOD-v0`` reverses the weight order (``weights=(3, 2, 1)``, obj0
      heaviest), so every push direction of ``-v0`` is inverted; observation shape and bounds are unchanged, so
      a model trained on ``-v0`` can be evaluated on it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    n_reset_uniforms = N_RESET_UNIFORMS
    n_step_uniforms = N_STEP_UNIFORMS

    def __init__(
        self,
        render_mode: str | None = None,
        grid_size: int = 5,
        n_objects: int = 3,
        weights: Sequence[float] | None = None,
        weight_seed: int | None = None,
        intervention_prob: float = 0.0,
    ) -> None:
        super().__init__(render_mode=render_mode)
        name = type(self).__name__
        self.grid_size = check_int(name, "grid_size", grid_size, low=MIN_GRID, high=MAX_GRID)
        self.n_objects = check_int(name, "n_objects", n_objects, low=MIN_OBJECTS, high=MAX_OBJECTS)
        if 2 * self.n_objects > self.grid_size**2:
            raise InvalidArgumentError(
                f"{name}: n_objects={self.n_objects} is too many for grid_size={self.grid_size}; "
                f"at most grid_size**2 / 2 = {self.grid_size**2 // 2} objects fit"
            )
        self.intervention_prob = check_probability(name, "intervention_prob", intervention_prob)
        self.weights = self._check_weights(name, weights, weight_seed)
        self.weight_seed = weight_seed
        self._w_lo, self._w_hi = float(self.weights.min()), float(self.weights.max())

        n, g = self.n_objects, self.grid_size
        graph = np.ones((n, n + 1), dtype=bool)
        top = float(g - 1)
        low = np.tile(np.array([0.0, 0.0, self._w_lo, 0.0, 0.0]), n)
        high = np.tile(np.array([top, top, self._w_hi, top, top]), n)
        self._init_causal({f"obj{i}": SLOT_WIDTH for i in range(n)}, graph, low, high, spaces.Discrete(4 * n))
        self._slot_index = {f"obj{i}": i for i in range(n)}
        self._reward_scale = 1.0 / (n * 2 * g)
        self._self_edges = np.eye(n, n + 1, dtype=bool)[None]

    def _check_weights(self, name: str, weights: Any, weight_seed: Any) -> np.ndarray:
        n = self.n_objects
        if weights is not None and weight_seed is not None:
            raise InvalidArgumentError(f"{name}: pass weights or weight_seed, not both")
        if weight_seed is not None:
            seed = check_int(name, "weight_seed", weight_seed, low=0)
            return np.random.default_rng(seed).permutation(n).astype(np.float64) + 1.0
        if weights is None:
            return np.arange(1, n + 1, dtype=np.float64)
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
            raise InvalidArgumentError(f"{name}: weights={weights!r} must be a sequence of {n} numbers")
        if len(weights) != n:
            raise InvalidArgumentError(f"{name}: weights has {len(weights)} entries, n_objects={n} needs {n}")
        values = [check_float(name, f"weights[{i}]", w, low=MIN_WEIGHT, high=MAX_WEIGHT) for i, w in enumerate(weights)]
        if len(set(np.float32(values).tolist())) != n:
            raise InvalidArgumentError(f"{name}: weights={values} must be distinct as float32 (they are observed so)")
        return np.array(values, dtype=np.float64)

    # ------------------------------------------------------------------ batched dynamics
    def _distinct_cells(self, u: np.ndarray) -> np.ndarray:
        """``n_objects`` distinct uniform cell indices per row, drawn without replacement from ``u`` (B, n)."""
        cells = self.grid_size**2
        taken = np.zeros((len(u), cells), dtype=bool)
        out = np.empty((len(u), self.n_objects), dtype=np.int64)
        for k in range(self.n_objects):
            rank = np.minimum((u[:, k] * (cells - k)).astype(np.int64), cells - k - 1)
            free = ~taken
            pick = np.argmax(free & (np.cumsum(free, axis=1) == rank[:, None] + 1), axis=1)
            out[:, k] = pick
            taken[np.arange(len(u)), pick] = True
        return out

    def _reset_batch(self, u: np.ndarray) -> State:
        n, g = self.n_objects, self.grid_size
        start = self._distinct_cells(u[:, :n])
        goal = self._distinct_cells(u[:, MAX_OBJECTS : MAX_OBJECTS + n])
        # Never start solved: swap the goals of obj0 and obj1 (distinct cells, so obj0's goal moves off its start).
        solved = np.all(start == goal, axis=1)
        goal = np.where(solved[:, None], goal[:, [1, 0, *range(2, n)]], goal)
        batch = len(u)
        return {
            "pos": np.stack([start % g, start // g], axis=2),
            "goal": np.stack([goal % g, goal // g], axis=2),
            "weight": np.broadcast_to(self.weights, (batch, n)).copy(),
        }

    def _step_batch(self, state: State, action: np.ndarray, u: np.ndarray) -> StepResult:
        pos, goal, weight = state["pos"], state["goal"], state["weight"]
        n, g = self.n_objects, self.grid_size
        batch = len(pos)
        ar = np.arange(batch)
        mover = action >> 2
        step = _STEPS[action & 3]

        # Target cell T, its occupant p, the cell beyond B and its occupant q (decided from the state at t).
        # Cells are compared by the code x + 32 y, unique for -2 <= x, y <= 13.
        m_pos = pos[ar, mover]
        target = m_pos + step
        beyond = target + step
        in_t = ((target >= 0) & (target < g)).all(axis=1)
        in_b = ((beyond >= 0) & (beyond < g)).all(axis=1)
        codes = pos @ _CODE
        at_t = codes == (target @ _CODE)[:, None]
        at_b = codes == (beyond @ _CODE)[:, None]
        has_p, p = at_t.any(axis=1), at_t.argmax(axis=1)
        has_q, q = at_b.any(axis=1), at_b.argmax(axis=1)
        attempt = in_t & has_p & in_b & (weight[ar, mover] > weight[ar, p])
        push = attempt & ~has_q
        moves = (in_t & ~has_p) | push

        new_pos = pos.copy()
        new_pos[ar, p] = np.where(push[:, None], beyond, pos[ar, p])  # p == mover only when there is no p
        new_pos[ar, mover] = np.where(moves[:, None], target, m_pos)

        # Local graph of this transition (before interventions): self-edges, then the touched objects' edges.
        graph = np.repeat(self._self_edges, batch, axis=0)
        blocked_push = attempt & has_q
        graph[ar, mover, n] = True
        graph[ar, mover, p] |= in_t & has_p
        graph[ar, mover, q] |= blocked_push
        graph[ar, p, mover] |= push
        graph[ar, p, n] |= push
        graph[ar, p, q] |= blocked_push

        # Exogenous re-spawn of one object (new cell, new goal), void if another object holds either.
        intervened = np.zeros((batch, n), dtype=bool)
        if self.intervention_prob > 0.0:
            obj = np.minimum((u[:, _U_OBJECT] * n).astype(np.int64), n - 1)
            cells = (np.minimum((u[:, [_U_CELL, _U_GOAL]] * (g * g)).astype(np.int64), g * g - 1))[:, :, None]
            dest, new_goal = np.concatenate([cells % g, cells // g], axis=2).transpose(1, 0, 2)
            clash = np.all(new_pos == dest[:, None, :], axis=2) | np.all(goal == new_goal[:, None, :], axis=2)
            clash[ar, obj] = False
            attempted = u[:, _U_INTERVENE] < self.intervention_prob
            void = attempted & clash.any(axis=1)
            intervened = (attempted & ~void)[:, None] & (np.arange(n)[None, :] == obj[:, None])
            new_pos = np.where(intervened[:, :, None], dest[:, None, :], new_pos)
            goal = np.where(intervened[:, :, None], new_goal[:, None, :], goal)
            weight = np.where(intervened, self.weights[None, :], weight)
            graph[intervened] = False
            graph[void, obj[void]] = True

        dist = np.abs(new_pos - goal).sum(axis=(1, 2))
        terminated = dist == 0
        reward = terminated.astype(np.float64) - dist * self._reward_scale
        new_state = {"pos": new_pos, "goal": goal, "weight": weight}
        return StepResult(new_state, reward, terminated, graph, intervened)

    def _observe_batch(self, state: State) -> np.ndarray:
        pos, goal = state["pos"], state["goal"]
        obs = np.concatenate([pos, state["weight"][:, :, None], goal], axis=2)
        return obs.reshape(len(pos), -1).astype(np.float32)

    # ------------------------------------------------------------------ verification and rendering
    def _free_neighbours(self, cell: np.ndarray, taken: np.ndarray) -> list[np.ndarray]:
        out = []
        for d in range(4):
            nb = cell + np.array([_DX[d], _DY[d]])
            if np.all((nb >= 0) & (nb < self.grid_size)) and not np.any(np.all(taken == nb, axis=1)):
                out.append(nb)
        return out

    def _perturb_cell(self, cells: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
        """Move ``cells[i]`` one cell to a neighbour not in the other cells (any free cell if none is)."""
        others = np.delete(cells, i, axis=0)
        options = self._free_neighbours(cells[i], others)
        if not options:
            g = self.grid_size
            every = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
            options = [c for c in every if not np.any(np.all(cells == c, axis=1))]
        out = cells.copy()
        out[i] = options[int(rng.integers(len(options)))]
        return out

    def _perturb_slot(self, state: State, slot: str, rng: np.random.Generator) -> State:
        i = self._slot_index[slot]
        kind = rng.random()
        if kind < 0.6:  # the position, by one cell (mostly)
            state["pos"] = self._perturb_cell(state["pos"][0], i, rng)[None]
        elif kind < 0.9:  # the weight, to another weight of the instance (changes the order; ties cannot push)
            weight = state["weight"].copy()
            others = self.weights[self.weights != weight[0, i]]
            weight[0, i] = others[int(rng.integers(len(others)))]
            state["weight"] = weight
        else:  # the goal, by one cell
            state["goal"] = self._perturb_cell(state["goal"][0], i, rng)[None]
        return state

    def _render_frame(self, state: State) -> np.ndarray:
        g = self.grid_size
        canvas = Canvas(g, g, scale=max(16, 320 // g), background=(30, 30, 36))
        for x in range(g):
            for y in range(g):
                if (x + y) % 2:
                    canvas.rect(x, y, x + 1, y + 1, (42, 42, 50))
        span = max(self._w_hi - self._w_lo, 1e-9)
        t = 0.08  # outline thickness
        for i in range(self.n_objects):
            colour = _PALETTE[i % len(_PALETTE)]
            gx, gy = (float(v) for v in state["goal"][0, i])
            canvas.rect(gx + 0.05, gy + 0.05, gx + 0.95, gy + 0.05 + t, colour)
            canvas.rect(gx + 0.05, gy + 0.95 - t, gx + 0.95, gy + 0.95, colour)
            canvas.rect(gx + 0.05, gy + 0.05, gx + 0.05 + t, gy + 0.95, colour)
            canvas.rect(gx + 0.95 - t, gy + 0.05, gx + 0.95, gy + 0.95, colour)
        for i in range(self.n_objects):
            frac = min(max((float(state["weight"][0, i]) - self._w_lo) / span, 0.0), 1.0)
            shade = 0.55 + 0.45 * frac  # heavier: bigger and brighter
            colour = tuple(int(c * shade) for c in _PALETTE[i % len(_PALETTE)])
            half = 0.16 + 0.2 * frac  # leaves the goal outline visible under an object on its goal
            cx, cy = (float(v) + 0.5 for v in state["pos"][0, i])
            canvas.rect(cx - half, cy - half, cx + half, cy + half, colour)
        return canvas.frame


class WeightedBlocksVectorEnv(CausalVectorEnv):
    """Natively batched :class:`WeightedBlocksEnv` (same transitions, seeds ``seed + i``)."""

    env_class = WeightedBlocksEnv
