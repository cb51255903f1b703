"""Continuous 2-D box pushing with a distractor ball and ground-truth local causal graphs."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from cwm_rl.envs.base import CausalEnv, CausalVectorEnv, State, StepResult
from cwm_rl.envs.render import Canvas
from cwm_rl.envs.validation import check_float, check_int

# Arena [0, 1]^2 with walls on every side. Radii in arena units.
AGENT_R = 0.05
BOX_R = 0.08
DIST_R = 0.04
CONTACT = AGENT_R + BOX_R  # agent and box touch when their centres are this close
V_MAX = 0.1  # bound of every velocity component, whatever the kwargs (keeps the observation bounds fixed)
MAX_DISTRACTORS = 4
BOX_LO, BOX_HI = 0.25, 0.75  # box start region (each axis)
GOAL_LO, GOAL_HI = 0.15, 0.85  # goal region (each axis)
MIN_GOAL_DIST = 0.25  # the box starts at least this far from the goal
MIN_AGENT_DIST = CONTACT + 0.05  # the agent starts at least this far from the box
_TOL = 1e-9  # overlaps smaller than this (rounding after a contact) are not resolved again

# Uniforms per step: two per distractor (velocity noise), fixed at the largest distractor count.
N_STEP_UNIFORMS = 2 * MAX_DISTRACTORS
# Per reset: box (2), four goal candidates (8), two agent candidates (4), per distractor position and direction (4).
_U_BOX, _U_GOAL, _U_AGENT, _U_DIST = 0, 2, 10, 14
N_GOAL_CANDIDATES, N_AGENT_CANDIDATES = 4, 2
N_RESET_UNIFORMS = _U_DIST + 4 * MAX_DISTRACTORS

AGENT_COLOUR = (70, 130, 240)
BOX_COLOUR = (240, 150, 40)
GOAL_COLOUR = (60, 180, 75)
DIST_COLOUR = (200, 80, 200)

# How the suite registers this env: cwm/Pusher2D-v0 and its out-of-distribution twin.
SUITE_SPEC = {
    "name": "Pusher2D",
    "max_episode_steps": 200,
    "kwargs": {},
    # A three times heavier box and a 2.5x faster distractor; same observation shape and bounds.
    "ood_kwargs": {"box_mass": 3.0, "distractor_speed": 0.05},
}


def _walls(pos: np.ndarray, vel: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Clamp positions ``(..., 2)`` into ``[lo, hi]``; a clamped axis loses its velocity (inelastic wall)."""
    clamped = np.minimum(np.maximum(pos, lo), hi)
    return clamped, np.where(clamped != pos, 0.0, vel)


def _nudge(x: np.ndarray, delta: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x + delta``, or ``x - delta`` on the axes where that would leave ``[lo, hi]`` (so the value always moves)."""
    moved = x + delta
    return np.where((moved < lo) | (moved > hi), x - delta, moved)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1])


class Pusher2DEnv(CausalEnv):
    """A point agent pushes a box onto a goal in a walled 2-D arena while a distractor ball drifts around.

    ## Description
    The arena is the unit square with walls. The agent is a disc (radius 0.05) driven by a force: each step its
    velocity is damped, the force times ``agent_gain`` is added, the speed is clipped to ``agent_max_speed`` and the
    agent moves by its velocity; walls stop it (the velocity across a wall is zeroed). The box is a disc (radius
    0.08) of mass ``box_mass`` (the agent's is 1) that slides with velocity damped by ``box_friction`` each step.
    It moves only when pushed: if the agent and the box overlap after both moved, the overlap is resolved along the
    line of centres in inverse proportion to the masses and their normal velocities are equalised (a perfectly
    inelastic collision, momentum conserved). Walls then stop both; if the box is pinned against a wall and still
    overlaps the agent, the agent is pushed out. The distractor balls (radius 0.04) move at constant speed
    ``distractor_speed`` with a small uniform noise on their velocity (renormalised to that speed), bounce off the
    walls, and pass through everything: they never influence anything and nothing influences them.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: the force on the agent (x, y).

    ## Observation Space
    ``Box(10 + 4 * n_distractors,)`` float32 in slots: ``agent`` (x, y, vx, vy), ``box`` (x, y, vx, vy), then
    ``distractor`` (x, y, vx, vy) (``distractor0``, ``distractor1``, ... when ``n_distractors != 1``), then
    ``goal`` (x, y). Positions lie in ``[0, 1]``, velocity components in ``[-0.1, 0.1]`` (per step), whatever
    the kwargs.

    ## Rewards
    ``-||box - goal|| - 0.1 * ||agent - box||`` after every step (in about ``[-1.2, 0]``), plus
    ``success_bonus`` on the step on which the box reaches the goal.

    ## Starting State
    The box at rest, uniform in ``[0.25, 0.75]^2``. The goal uniform in ``[0.15, 0.85]^2`` at least 0.25 from the
    box (the first of four uniform candidates that is far enough, else the corner of that region farthest from the
    box). The agent at rest, uniform in the arena at least 0.18 from the box (first of two candidates, else 0.2
    beside the box towards the centre). Distractors uniform in the arena, moving at ``distractor_speed`` in a
    random direction.

    ## Episode End
    Terminates when the centre of the box is within ``goal_radius`` of the goal; truncated at 200 steps by the
    registration.

    ## Arguments
    * ``agent_gain`` (float in (0, 0.05], default 0.01): velocity added per step by a unit force.
    * ``agent_damping`` (float in [0, 1], default 0.2): fraction of the agent's velocity lost per step.
    * ``agent_max_speed`` (float in (0, 0.1], default 0.05): the agent's speed limit (arena units per step).
    * ``box_mass`` (float in [0.1, 10], default 1.0): the box's mass relative to the agent's.
    * ``box_friction`` (float in [0, 1], default 0.3): fraction of the box's velocity lost per step.
    * ``distractor_speed`` (float in [0, 0.1], default 0.02).
    * ``distractor_noise`` (float in [0, 0.5], default 0.2): velocity noise per axis, relative to the speed.
    * ``n_distractors`` (int in [0, 4], default 1).
    * ``goal_radius`` (float in [0.01, 0.2], default 0.05).
    * ``success_bonus`` (float in [0, 100], default 10.0).

    ## Causal Graph
    Slots ``agent, box, distractor(s), goal``; the last column is the action. Per transition, decided from the
    positions after the free motion of this step:

    * ``agent <- agent, action``: always. ``agent <- box`` when the agent touches the box (a contact, or a
      box pinned against a wall that pushes the agent out).
    * ``box <- box``: always. ``box <- agent, action`` on a contact (the agent's new position, which the action
      sets, pushes the box).
    * ``distractor <- distractor``, ``goal <- goal``: always, nothing else.

    The global graph is the union of these edges. There are no exogenous interventions.

    ## Version History
    * v0: initial version. ``cwm/Pusher2D-OOD-v0`` makes the box three times heavier (``box_mass=3``: slower to
      push, and it slows the agent more) and the distractor 2.5 times faster (``distractor_speed=0.05``);
      observation shape and bounds are those of ``-v0``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    n_reset_uniforms = N_RESET_UNIFORMS
    n_step_uniforms = N_STEP_UNIFORMS

    def __init__(
        self,
        render_mode: str | None = None,
        agent_gain: float = 0.01,
        agent_damping: float = 0.2,
        agent_max_speed: float = 0.05,
        box_mass: float = 1.0,
        box_friction: float = 0.3,
        distractor_speed: float = 0.02,
        distractor_noise: float = 0.2,
        n_distractors: int = 1,
        goal_radius: float = 0.05,
        success_bonus: float = 10.0,
    ) -> None:
        super().__init__(render_mode=render_mode)
        name = type(self).__name__
        self.agent_gain = check_float(name, "agent_gain", agent_gain, low=0.0, high=0.05, low_open=True)
        self.agent_damping = check_float(name, "agent_damping", agent_damping, low=0.0, high=1.0)
        self.agent_max_speed = check_float(name, "agent_max_speed", agent_max_speed, low=0.0, high=V_MAX, low_open=True)
        self.box_mass = check_float(name, "box_mass", box_mass, low=0.1, high=10.0)
        self.box_friction = check_float(name, "box_friction", box_friction, low=0.0, high=1.0)
        self.distractor_speed = check_float(name, "distractor_speed", distractor_speed, low=0.0, high=V_MAX)
        self.distractor_noise = check_float(name, "distractor_noise", distractor_noise, low=0.0, high=0.5)
        self.n_distractors = check_int(name, "n_distractors", n_distractors, low=0, high=MAX_DISTRACTORS)
        self.goal_radius = check_float(name, "goal_radius", goal_radius, low=0.01, high=0.2)
        self.success_bonus = check_float(name, "success_bonus", success_bonus, low=0.0, high=100.0)
        self._agent_keep = 1.0 - self.agent_damping
        self._box_keep = 1.0 - self.box_friction
        self._w_agent = self.box_mass / (1.0 + self.box_mass)  # share of an overlap the agent gives way
        self._w_box = 1.0 / (1.0 + self.box_mass)
        self._speed2 = self.agent_max_speed**2
        self._dist_jitter = self.distractor_noise * self.distractor_speed

        k = self.n_distractors
        self.distractor_slots = ("distractor",) if k == 1 else tuple(f"distractor{i}" for i in range(k))
        self._agent, self._box, self._goal, self._action = 0, 1, 2 + k, 3 + k
        n = 3 + k
        always = np.zeros((n, n + 1), dtype=bool)
        always[np.arange(n), np.arange(n)] = True
        always[self._agent, self._action] = True
        graph = always.copy()
        graph[self._agent, self._box] = True
        graph[self._box, [self._agent, self._action]] = True
        self._always = always

        slot_dims = {"agent": 4, "box": 4, **dict.fromkeys(self.distractor_slots, 4), "goal": 2}
        obj_low, obj_high = [0.0, 0.0, -V_MAX, -V_MAX], [1.0, 1.0, V_MAX, V_MAX]
        low = np.array(obj_low * (2 + k) + [0.0, 0.0])
        high = np.array(obj_high * (2 + k) + [1.0, 1.0])
        self._init_causal(slot_dims, graph, low, high, spaces.Box(-1.0, 1.0, (2,), dtype=np.float32))

    has_observation_reward = True

    def reward_from_observation(self, next_obs: Any) -> tuple[Any, Any]:
        """The step's reward and termination from the observation it reaches (exactly what ``step`` returns, up to
        float32 rounding of the observation): ``-|box - goal| - 0.1 |agent - box| + success_bonus`` on reaching the
        goal."""
        agent = next_obs[..., self.slot_slices["agent"]][..., 0:2]
        box = next_obs[..., self.slot_slices["box"]][..., 0:2]
        goal = next_obs[..., self.slot_slices["goal"]]
        box_goal = ((box - goal) ** 2).sum(-1) ** 0.5
        terminated = box_goal < self.goal_radius
        reward = -box_goal - 0.1 * ((agent - box) ** 2).sum(-1) ** 0.5 + self.success_bonus * terminated
        return reward, terminated

    # ------------------------------------------------------------------ batched dynamics
    # State: "agent" (B, 4), "box" (B, 4), "dist" (B, K, 4) as (x, y, vx, vy); "goal" (B, 2). Float64 throughout.
    def _reset_batch(self, u: np.ndarray) -> State:
        n = len(u)
        box = BOX_LO + (BOX_HI - BOX_LO) * u[:, _U_BOX : _U_BOX + 2]

        # Goal: the first candidate far enough from the box, else the farthest corner of the goal region.
        goal = np.where(box < 0.5, GOAL_HI, GOAL_LO)
        for c in reversed(range(N_GOAL_CANDIDATES)):
            cand = GOAL_LO + (GOAL_HI - GOAL_LO) * u[:, _U_GOAL + 2 * c : _U_GOAL + 2 * c + 2]
            goal = np.where((_norm(cand - box) >= MIN_GOAL_DIST)[:, None], cand, goal)

        # Agent: the first candidate clear of the box, else beside the box towards the centre.
        agent = box + np.stack([np.where(box[:, 0] < 0.5, 0.2, -0.2), np.zeros(n)], axis=1)
        for c in reversed(range(N_AGENT_CANDIDATES)):
            cand = AGENT_R + (1.0 - 2.0 * AGENT_R) * u[:, _U_AGENT + 2 * c : _U_AGENT + 2 * c + 2]
            agent = np.where((_norm(cand - box) >= MIN_AGENT_DIST)[:, None], cand, agent)

        k = self.n_distractors
        ud = u[:, _U_DIST : _U_DIST + 4 * k].reshape(n, k, 4)
        dpos = DIST_R + (1.0 - 2.0 * DIST_R) * ud[:, :, :2]
        direction = 2.0 * ud[:, :, 2:] - 1.0
        length = _norm(direction)
        short = length < 0.1
        direction = np.where(short[..., None], np.array([1.0, 0.0]), direction)
        length = np.where(short, 1.0, length)
        dvel = direction * (self.distractor_speed / length)[..., None]

        zeros = np.zeros((n, 2))
        return {
            "agent": np.concatenate([agent, zeros], axis=1),
            "box": np.concatenate([box, zeros], axis=1),
            "dist": np.concatenate([dpos, dvel], axis=2),
            "goal": goal,
        }

    def _step_batch(self, state: State, action: np.ndarray, u: np.ndarray) -> StepResult:
        agent, box, dist, goal = state["agent"], state["box"], state["dist"], state["goal"]
        n = len(agent)

        # Agent: damped velocity plus force, speed limit, move, walls.
        av = agent[:, 2:] * self._agent_keep + self.agent_gain * action
        speed2 = av[:, 0] * av[:, 0] + av[:, 1] * av[:, 1]
        fast = speed2 > self._speed2
        if fast.any():
            av = av * np.where(fast, self.agent_max_speed / np.sqrt(np.maximum(speed2, 1e-300)), 1.0)[:, None]
        ap, av = _walls(agent[:, :2] + av, av, AGENT_R, 1.0 - AGENT_R)

        # Box: damped sliding, then a perfectly inelastic collision if the agent's new position overlaps it.
        bv = box[:, 2:] * self._box_keep
        bp = box[:, :2] + bv
        gap = bp - ap
        d2 = gap[:, 0] * gap[:, 0] + gap[:, 1] * gap[:, 1]
        contact = d2 < CONTACT * CONTACT
        if contact.any():
            d = np.sqrt(np.maximum(d2, 1e-300))
            normal = gap / np.maximum(d, 1e-12)[:, None]  # agent -> box
            overlap = np.where(contact, CONTACT - d, 0.0)[:, None]
            bp = bp + normal * (overlap * self._w_box)
            ap = ap - normal * (overlap * self._w_agent)
            closing = (av[:, 0] - bv[:, 0]) * normal[:, 0] + (av[:, 1] - bv[:, 1]) * normal[:, 1]
            impulse = np.where(contact, np.maximum(closing, 0.0), 0.0)[:, None] * normal
            av = np.minimum(np.maximum(av - impulse * self._w_agent, -V_MAX), V_MAX)
            bv = np.minimum(np.maximum(bv + impulse * self._w_box, -V_MAX), V_MAX)
            ap, av = _walls(ap, av, AGENT_R, 1.0 - AGENT_R)
        bp, bv = _walls(bp, bv, BOX_R, 1.0 - BOX_R)

        # A box pinned against a wall (or clamped onto the agent) pushes the agent out.
        gap = bp - ap
        d2 = gap[:, 0] * gap[:, 0] + gap[:, 1] * gap[:, 1]
        pinned = d2 < (CONTACT - _TOL) ** 2
        if pinned.any():
            d = np.sqrt(np.maximum(d2, 1e-300))
            normal = gap / np.maximum(d, 1e-12)[:, None]
            sel = pinned[:, None]
            ap = np.where(sel, bp - normal * CONTACT, ap)
            into = np.maximum(av[:, 0] * normal[:, 0] + av[:, 1] * normal[:, 1], 0.0)[:, None]
            av = np.where(sel, av - into * normal, av)
            ap, av = _walls(ap, av, AGENT_R, 1.0 - AGENT_R)

        # Distractors: jittered velocity renormalised to the constant speed, bounce off the walls.
        if self.n_distractors:
            k = self.n_distractors
            dv = dist[:, :, 2:] + self._dist_jitter * (2.0 * u[:, : 2 * k].reshape(n, k, 2) - 1.0)
            dv = dv * (self.distractor_speed / np.maximum(_norm(dv), 1e-12))[..., None]
            dp = dist[:, :, :2] + dv
            low, high = dp < DIST_R, dp > 1.0 - DIST_R
            dp = np.where(low, 2.0 * DIST_R - dp, np.where(high, 2.0 * (1.0 - DIST_R) - dp, dp))
            dv = np.where(low | high, -dv, dv)
            new_dist = np.concatenate([dp, dv], axis=2)
        else:
            new_dist = dist

        box_goal = _norm(bp - goal)
        terminated = box_goal < self.goal_radius
        reward = -box_goal - 0.1 * _norm(ap - bp) + self.success_bonus * terminated

        graph = np.repeat(self._always[None], n, axis=0)
        graph[:, self._agent, self._box] = contact | pinned
        graph[:, self._box, self._agent] = contact
        graph[:, self._box, self._action] = contact
        new_state = {
            "agent": np.concatenate([ap, av], axis=1),
            "box": np.concatenate([bp, bv], axis=1),
            "dist": new_dist,
            "goal": goal,
        }
        return StepResult(new_state, reward, terminated, graph, np.zeros((n, self.n_slots), dtype=bool))

    def _observe_batch(self, state: State) -> np.ndarray:
        agent = state["agent"]
        dist = state["dist"].reshape(len(agent), 4 * self.n_distractors)
        return np.concatenate([agent, state["box"], dist, state["goal"]], axis=1).astype(np.float32)

    # ------------------------------------------------------------------ verification and rendering
    def _perturb_slot(self, state: State, slot: str, rng: np.random.Generator) -> State:
        if slot in ("agent", "box"):
            r = AGENT_R if slot == "agent" else BOX_R
            obj = state[slot].copy()
            obj[0, :2] = _nudge(obj[0, :2], rng.uniform(-0.03, 0.03, 2), r, 1.0 - r)
            obj[0, 2:] = _nudge(obj[0, 2:], rng.uniform(-0.01, 0.01, 2), -V_MAX, V_MAX)
            state[slot] = obj
        elif slot == "goal":
            state["goal"] = _nudge(state["goal"], rng.uniform(-0.05, 0.05, (1, 2)), GOAL_LO, GOAL_HI)
        else:
            i = self.distractor_slots.index(slot)
            dist = state["dist"].copy()
            dist[0, i, :2] = _nudge(dist[0, i, :2], rng.uniform(-0.03, 0.03, 2), DIST_R, 1.0 - DIST_R)
            v = dist[0, i, 2:] + rng.uniform(-0.3, 0.3, 2) * self.distractor_speed
            dist[0, i, 2:] = v * (self.distractor_speed / max(float(np.hypot(v[0], v[1])), 1e-12))
            state["dist"] = dist
        return state

    def _render_frame(self, state: State) -> np.ndarray:
        canvas = Canvas(1.0, 1.0, scale=256, background=(25, 25, 30))
        gx, gy = state["goal"][0]
        canvas.circle(gx, gy, self.goal_radius, GOAL_COLOUR)
        canvas.circle(gx, gy, 0.012, (230, 255, 230))
        bx, by = state["box"][0, :2]
        canvas.circle(bx, by, BOX_R, BOX_COLOUR)
        ax, ay = state["agent"][0, :2]
        canvas.circle(ax, ay, AGENT_R, AGENT_COLOUR)
        for dx, dy in state["dist"][0, :, :2]:
            canvas.circle(dx, dy, DIST_R, DIST_COLOUR)
        return canvas.frame


class Pusher2DVectorEnv(CausalVectorEnv):
    """Natively batched :class:`Pusher2DEnv` (same transitions, seeds ``seed + i``)."""

    env_class = Pusher2DEnv
