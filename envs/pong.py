"""Interventional Pong with ground-truth local causal graphs (after CITRIS, Lippe et al. 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from types import SimpleNamespace

import numpy as np
from gymnasium import spaces

from cwm_rl.envs.base import CausalEnv, CausalVectorEnv, State, StepResult
from cwm_rl.envs.render import Canvas
from cwm_rl.envs.validation import check_float, check_int, check_probability, check_subset

SIZE = 32.0
PADDLE_HALF_H = 3.0  # paddles are 6 high ...
PADDLE_W = 2.0  # ... and 2 wide
LEFT_FACE = 1.0 + PADDLE_W  # left paddle spans x in [1, 3]
RIGHT_FACE = SIZE - 1.0 - PADDLE_W  # right paddle spans x in [29, 31]
PADDLE_LO, PADDLE_HI = PADDLE_HALF_H, SIZE - PADDLE_HALF_H
MIN_BALL_SPEED = float(np.finfo(np.float32).smallest_subnormal)  # a slower ball's float32 velocity bounds are 0

SLOTS = ("left_paddle", "right_paddle", "ball", "score")
LP, RP, BALL, SCORE, ACTION = 0, 1, 2, 3, 4
KEYS = ("lp", "rp", "bx", "by", "vx", "vy", "sl", "sr")  # state arrays, in observation order
_SLOT_COLUMNS = {LP: (0,), RP: (1,), BALL: (2, 3, 4, 5), SCORE: (6, 7)}
_SLOT_IDS = np.arange(4)[None, :]
_STATE_VALUES = itemgetter(*KEYS)  # state dict -> its arrays in observation order
_NO_HIT = np.zeros(1, dtype=bool)  # broadcasts to any batch

# Uniforms consumed per event (fixed, so counterfactual replays see the same noise).
_U_INTERVENE, _U_TARGET, _U_VALUES, _U_LP_NOISE, _U_RP_NOISE, _U_RESPAWN = 0, 1, 2, 6, 7, 8
N_STEP_UNIFORMS = 11
N_RESET_UNIFORMS = 5

# How the suite registers this env: cwm/InterventionalPong-v0 and its out-of-distribution twin.
SUITE_SPEC = {
    "name": "InterventionalPong",
    "max_episode_steps": 1000,
    "kwargs": {},
    # Unseen intervention target (the score) and slower paddles.
    "ood_kwargs": {"intervention_targets": ("left_paddle", "right_paddle", "ball", "score"), "paddle_max_step": 1.0},
}


class InterventionalPongEnv(CausalEnv):
    """Pong on a 32x32 court where exogenous interventions hit single objects and every step reports its graph.

    ## Description
    After CITRIS's Interventional Pong (Lippe et al., 2022), on states instead of pixels. Two paddles (6 high,
    2 wide) and a ball (radius 1.2, constant speed 2.0). The left paddle is a scripted opponent that tracks the
    ball (at most ``paddle_max_step`` per step, plus uniform noise); the agent moves the right paddle. With
    probability ``intervention_prob`` per step one target slot, drawn uniformly from ``intervention_targets``,
    is set to a random value by an exogenous intervention (reported in ``info["intervened"]``).

    ## Action Space
    ``Discrete(3)``: 0 stay, 1 move the right paddle up, 2 move it down (by ``paddle_max_step`` plus noise).

    ## Observation Space
    ``Box(8,)`` float32 in four slots: ``left_paddle`` (y), ``right_paddle`` (y), ``ball`` (x, y, vx, vy),
    ``score`` (left, right). Positions are in court units, ``0 <= x, y <= 32``.

    ## Rewards
    +1 when the agent (right) scores a point, -1 when the opponent does, 0 otherwise.

    ## Starting State
    Paddles at uniform heights; the ball at the centre line at a uniform height, moving left or right with a
    uniform vertical component; score 0:0.

    ## Episode End
    Terminates when one side reaches ``winning_score`` points (5); truncated at 1,000 steps by the registration.

    ## Arguments
    * ``intervention_prob`` (float in [0, 1], default 0.15): probability of an intervention per step.
    * ``intervention_targets`` (names from the slots, default paddles and ball): possible targets.
    * ``paddle_max_step`` (float > 0, default 1.5): the largest paddle move per step, both paddles.
    * ``paddle_noise`` (float >= 0, default 0.5): paddle moves get uniform noise in ``[-noise, noise]``.
    * ``ball_speed`` (float in [1.4e-45, 4], default 2.0): at least the smallest positive float32, so that the
      float32 velocity bounds ``[-ball_speed, ball_speed]`` are not both 0.
    * ``winning_score`` (int in [1, 99], default 5).

    ## Causal Graph
    Slots ``left_paddle, right_paddle, ball, score``; the last column is the action. Per transition:

    * ``left_paddle <- left_paddle, ball``: always (it tracks the ball from its own position).
    * ``right_paddle <- right_paddle, action``: always.
    * ``ball <- ball``: always. ``ball <- left_paddle`` / ``ball <- right_paddle`` only when the ball hits that
      paddle this step (the hit point sets the rebound angle).
    * ``score <- score``: always. ``score <- ball`` only when a point is scored this step.
    * An intervened slot has no parents that step (its row is all False).

    The global graph is the union of these edges. Contacts and points are decided from the state at t.

    ## Version History
    * v0: initial version. ``cwm/InterventionalPong-OOD-v0`` intervenes on the score too (a target never seen in
      ``-v0``) and gives both paddles a slower ``paddle_max_step=1.0``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    n_reset_uniforms = N_RESET_UNIFORMS
    n_step_uniforms = N_STEP_UNIFORMS

    def __init__(
        self,
        render_mode: str | None = None,
        intervention_prob: float = 0.15,
        intervention_targets: Sequence[str] = ("left_paddle", "right_paddle", "ball"),
        paddle_max_step: float = 1.5,
        paddle_noise: float = 0.5,
        ball_speed: float = 2.0,
        winning_score: int = 5,
    ) -> None:
        super().__init__(render_mode=render_mode)
        name = type(self).__name__
        self.intervention_prob = check_probability(name, "intervention_prob", intervention_prob)
        self.intervention_targets = check_subset(name, "intervention_targets", intervention_targets, SLOTS)
        self.paddle_max_step = check_float(name, "paddle_max_step", paddle_max_step, low=0.0, low_open=True)
        self.paddle_noise = check_float(name, "paddle_noise", paddle_noise, low=0.0)
        self.ball_speed = check_float(name, "ball_speed", ball_speed, low=MIN_BALL_SPEED, high=4.0)
        self.winning_score = check_int(name, "winning_score", winning_score, low=1, high=99)
        self.ball_radius = 1.2
        self._max_vy = 0.75 * self.ball_speed
        self._target_index = np.array([SLOTS.index(t) for t in self.intervention_targets])
        self._moves = np.array([0.0, self.paddle_max_step, -self.paddle_max_step])  # stay, up, down
        self._c = self._constants()

        graph = np.zeros((4, 5), dtype=bool)
        graph[LP, [LP, BALL]] = True
        graph[RP, [RP, ACTION]] = True
        graph[BALL, [LP, RP, BALL]] = True
        graph[SCORE, [BALL, SCORE]] = True
        self._always = np.zeros((4, 5), dtype=bool)  # edges active in every transition (self, tracking, action)
        self._always[[LP, LP, RP, RP, BALL, SCORE], [LP, BALL, RP, ACTION, BALL, SCORE]] = True
        s, w = self.ball_speed, float(self.winning_score)
        low = np.array([PADDLE_LO, PADDLE_LO, 0.0, 0.0, -s, -s, 0.0, 0.0])
        high = np.array([PADDLE_HI, PADDLE_HI, SIZE, SIZE, s, s, w, w])
        self._init_causal(
            {"left_paddle": 1, "right_paddle": 1, "ball": 4, "score": 2}, graph, low, high, spaces.Discrete(3)
        )

    def _constants(self) -> SimpleNamespace:
        """The dynamics' constants as 0-d float64 arrays, computed as the formulas wrote them."""
        r, m = self.ball_radius, self.paddle_max_step
        constants = {
            "one": 1.0,
            "two": 2.0,
            "r": r,
            "m": m,
            "neg_m": -m,
            "noise": self.paddle_noise,
            "lo": PADDLE_LO,
            "hi": PADDLE_HI,
            "top": SIZE - r,
            "two_r": 2.0 * r,
            "two_top": 2.0 * (SIZE - r),
            "left_face": LEFT_FACE,
            "right_face": RIGHT_FACE,
            "reach": PADDLE_HALF_H + r,
            "max_vy": self._max_vy,
            "speed2": self.ball_speed**2,
            "left_mirror": 2.0 * (LEFT_FACE + r),
            "right_mirror": 2.0 * (RIGHT_FACE - r),
            "right_back": SIZE - r,
            "intervention_prob": self.intervention_prob,
            "winning_score": float(self.winning_score),
        }
        return SimpleNamespace(**{k: np.array(v, dtype=np.float64) for k, v in constants.items()})

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_c" not in self.__dict__:  # pickled (a resume snapshot) before the constants existed
            self._c = self._constants()

    # ------------------------------------------------------------------ batched dynamics
    # State: one (B,) float64 array per observed value, in observation order (see KEYS).
    def _serve(self, u_y: np.ndarray, u_vy: np.ndarray, u_dir: np.ndarray) -> tuple[np.ndarray, ...]:
        """A ball at the centre line at a uniform height, moving left or right."""
        y = 8.0 + 16.0 * u_y
        vy = self._max_vy * (2.0 * u_vy - 1.0)
        vx = np.sqrt(self.ball_speed**2 - vy * vy) * np.where(u_dir < 0.5, -1.0, 1.0)
        return np.full_like(y, SIZE / 2.0), y, vx, vy

    def _reset_batch(self, u: np.ndarray) -> State:
        span = PADDLE_HI - PADDLE_LO
        bx, by, vx, vy = self._serve(u[:, 2], u[:, 3], u[:, 4])
        zeros = np.zeros(len(u))
        values = (PADDLE_LO + span * u[:, 0], PADDLE_LO + span * u[:, 1], bx, by, vx, vy, zeros, zeros.copy())
        return dict(zip(KEYS, values, strict=True))

    def _step_batch(self, state: State, action: np.ndarray, u: np.ndarray) -> StepResult:
        # Written for the single env too (a batch of one), where every numpy call costs about as much as its
        # arithmetic: constants are 0-d arrays (numpy converts a Python float on every call), rare events are
        # tested with count_nonzero (4x cheaper than .any() on a short array), and no test is repeated.
        lp, rp, bx, by, vx, vy, sl, sr = _STATE_VALUES(state)
        c = self._c
        # Paddles: the opponent tracks the ball, the agent's paddle follows the action.
        new_lp = lp + np.minimum(np.maximum(by - lp, c.neg_m), c.m) + c.noise * (c.two * u[:, _U_LP_NOISE] - c.one)
        new_lp = np.minimum(np.maximum(new_lp, c.lo), c.hi)
        new_rp = rp + self._moves[action] + c.noise * (c.two * u[:, _U_RP_NOISE] - c.one)
        new_rp = np.minimum(np.maximum(new_rp, c.lo), c.hi)
        # Ball: move, bounce off the top and bottom walls, rebound off a paddle it reaches; the hit point sets the
        # angle. Rare events are computed only when some sub-env has them (same values, less work per step).
        nx, ny, nvx, nvy = bx + vx, by + vy, vx, vy
        low_wall, high_wall = ny < c.r, ny > c.top
        wall = low_wall | high_wall
        if np.count_nonzero(wall):
            ny = np.where(low_wall, c.two_r - ny, np.where(high_wall, c.two_top - ny, ny))
            nvy = np.where(wall, -nvy, nvy)
        # A paddle hit: the ball's leading edge crosses the paddle's face this step (so it moves towards it) at a
        # height within reach. Most steps no edge is near a face, and the full test is skipped.
        graph = self._always[None].repeat(len(lp), axis=0)  # the always-on edges plus contacts and points
        near_left, near_right = nx - c.r < c.left_face, nx + c.r > c.right_face
        if np.count_nonzero(near_left | near_right):
            hit_left = (bx - c.r >= c.left_face) & near_left & (np.abs(ny - lp) <= c.reach)
            hit_right = (bx + c.r <= c.right_face) & near_right & (np.abs(ny - rp) <= c.reach)
            graph[:, BALL, LP] = hit_left
            graph[:, BALL, RP] = hit_right
            hit = hit_left | hit_right
        else:
            hit = _NO_HIT
        if np.count_nonzero(hit):
            offset = np.minimum(np.maximum((ny - np.where(hit_left, lp, rp)) / c.reach, -c.one), c.one)
            rebound_vy = c.max_vy * offset
            rebound_vx = np.sqrt(c.speed2 - rebound_vy * rebound_vy)
            nvy = np.where(hit, rebound_vy, nvy)
            nvx = np.where(hit_left, rebound_vx, np.where(hit_right, -rebound_vx, nvx))
            nx = np.where(hit_left, c.left_mirror - nx, np.where(hit_right, c.right_mirror - nx, nx))
        # Points: the ball reaches a back wall and is served again from the centre.
        right_point = nx <= c.r
        left_point = nx >= c.right_back
        point = right_point | left_point
        if np.count_nonzero(point):
            sx, sy, svx, svy = self._serve(u[:, _U_RESPAWN], u[:, _U_RESPAWN + 1], u[:, _U_RESPAWN + 2])
            nx, ny = np.where(point, sx, nx), np.where(point, sy, ny)
            nvx, nvy = np.where(point, svx, nvx), np.where(point, svy, nvy)
            sl, sr = sl + left_point, sr + right_point
            graph[:, SCORE, BALL] = point
            reward = right_point.astype(np.float64) - left_point
        else:
            reward = np.zeros(len(lp))
        new = [new_lp, new_rp, nx, ny, nvx, nvy, sl, sr]
        # Exogenous single-target interventions: the target's value is replaced, its row loses every parent.
        intervene = u[:, _U_INTERVENE] < c.intervention_prob
        if np.count_nonzero(intervene):
            n_targets = len(self._target_index)
            pick = np.minimum((u[:, _U_TARGET] * n_targets).astype(np.int64), n_targets - 1)
            target = np.where(intervene, self._target_index[pick], -1)
            intervened = target[:, None] == _SLOT_IDS
            v = u[:, _U_VALUES : _U_VALUES + 4]
            for slot in np.unique(target[intervene]).tolist():  # only the slots some sub-env intervenes on
                for k, value in zip(_SLOT_COLUMNS[slot], self._replacement(slot, v), strict=True):
                    new[k] = np.where(intervened[:, slot], value, new[k])
            graph &= ~intervened[:, :, None]
        else:
            intervened = np.zeros((len(lp), 4), dtype=bool)
        terminated = np.maximum(new[6], new[7]) >= c.winning_score
        return StepResult(dict(zip(KEYS, new, strict=True)), reward, terminated, graph, intervened)

    def _replacement(self, slot: int, v: np.ndarray) -> list[np.ndarray]:
        """The values an intervention on ``slot`` sets, from the uniforms ``v`` ``(B, 4)`` (one per column)."""
        if slot in (LP, RP):
            return [PADDLE_LO + (PADDLE_HI - PADDLE_LO) * v[:, 0]]
        if slot == BALL:
            _, iy, ivx, ivy = self._serve(v[:, 1], v[:, 2], v[:, 3])
            return [8.0 + 16.0 * v[:, 0], iy, ivx, ivy]
        w = self.winning_score
        return [np.minimum(np.floor(v[:, 0] * w), w - 1), np.minimum(np.floor(v[:, 1] * w), w - 1)]

    def _observe_batch(self, state: State) -> np.ndarray:
        obs = np.empty((len(state["lp"]), len(KEYS)), dtype=np.float32)
        obs.T[...] = _STATE_VALUES(state)  # one call fills every column
        return obs

    # ------------------------------------------------------------------ verification and rendering
    def _perturb_slot(self, state: State, slot: str, rng: np.random.Generator) -> State:
        if slot in ("left_paddle", "right_paddle"):
            key = "lp" if slot == "left_paddle" else "rp"
            y = float(state[key][0])
            delta = rng.uniform(0.1, 1.0) * (1.0 if y < (PADDLE_LO + PADDLE_HI) / 2 else -1.0)
            state[key] = np.array([y + delta])
        elif slot == "ball":
            r = self.ball_radius
            x = np.clip(state["bx"] + rng.uniform(-1.0, 1.0), r + 0.01, SIZE - r - 0.01)
            y = np.clip(state["by"] + rng.uniform(-1.0, 1.0), r, SIZE - r)
            vy = np.clip(state["vy"] + rng.uniform(-0.3, 0.3), -self._max_vy, self._max_vy)
            vx = np.sign(state["vx"]) * np.sqrt(self.ball_speed**2 - vy * vy)
            state.update(bx=x, by=y, vx=vx, vy=vy)
        else:  # score: one side gains or loses a point, staying below the winning score
            key = ("sl", "sr")[int(rng.integers(2))]
            value = float(state[key][0])
            state[key] = np.array([value + 1.0 if value < self.winning_score - 1 else value - 1.0])
        return state

    def _render_frame(self, state: State) -> np.ndarray:
        canvas = Canvas(SIZE, SIZE, scale=8)
        lp, rp = float(state["lp"][0]), float(state["rp"][0])
        bx, by = float(state["bx"][0]), float(state["by"][0])
        canvas.rect(1.0, lp - PADDLE_HALF_H, LEFT_FACE, lp + PADDLE_HALF_H, (230, 80, 80))
        canvas.rect(RIGHT_FACE, rp - PADDLE_HALF_H, SIZE - 1.0, rp + PADDLE_HALF_H, (80, 160, 240))
        canvas.circle(bx, by, self.ball_radius, (240, 240, 240))
        for side, (x0, colour) in enumerate([(2.0, (230, 80, 80)), (SIZE / 2 + 2.0, (80, 160, 240))]):
            for k in range(int(state[("sl", "sr")[side]][0])):
                canvas.rect(x0 + 1.5 * k, SIZE - 1.5, x0 + 1.5 * k + 1.0, SIZE - 0.5, colour)
        return canvas.frame


class InterventionalPongVectorEnv(CausalVectorEnv):
    """Natively batched :class:`InterventionalPongEnv` (same transitions, seeds ``seed + i``)."""

    env_class = InterventionalPongEnv
