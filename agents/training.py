"""The training script behind ``cwm-rl train``: any agent, any registered env, one run directory.

A run directory holds ``config.yaml`` (the full resolved :class:`TrainConfig`; ``--config RUN_DIR/config.yaml``
re-runs it), TensorBoard events under ``tb/``, the agent checkpoint (``agent.pt`` for model-based agents,
``agent.zip`` for SB3), ``metrics.json`` (final and best evaluation return, the evaluation curve, env steps, the
final world-model metrics: only what the seed fixes, so a rerun writes the same file) and ``timing.json`` (wall
time, in total and at each evaluation). Evaluation follows one fixed protocol for every agent
(:mod:`cwm_rl.agents.evaluation`), every ``eval_every`` env steps and at the end.

While a run is going it also holds ``progress.json`` (the evaluation curve so far) and ``resume.pt``, a snapshot of
the whole training state (:mod:`cwm_rl.agents.snapshot`) taken after every evaluation at the next point where it is
exact (at once for the model-based agents; where SB3 starts its next rollout for the SB3 and Dyna agents). A run
killed at any moment, or stopped with Ctrl-C (which takes a snapshot before stopping), continues with
``cwm-rl train --resume RUN_DIR`` and ends with the same ``metrics.json`` as an uninterrupted run (wall times
aside). ``resume.pt`` is removed when the run finishes. With ``save_data`` an MPC agent's run also ends with
``data/``, its replay buffer as a transition dataset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwm_rl.checkpoint import atomic_write_json
from cwm_rl.config import ConfigError, apply_overrides, from_dict, read_yaml_mapping, save_yaml, to_dict
from cwm_rl.data import save_transitions
from cwm_rl.envs import spec_of
from cwm_rl.errors import TrainingInterrupted

from .base import torch_threads
from .dyna import DYNA_AGENTS, DynaAgent, DynaConfig, dyna_config_for
from .evaluation import evaluate_agent
from .model_based import MPC_AGENTS, MPCAgent, MPCConfig, mpc_config_for
from .random_agent import RandomAgent
from .sb3_baselines import SB3_ALGOS, SB3Agent
from .simple import SIMPLE_AGENTS, SimPLeAgent, SimPLeConfig, simple_config_for
from .snapshot import SNAPSHOT_NAME, load_snapshot, save_snapshot, set_global_rng_state, version_drift
from .wm_probe import RETURN_SEED_OFFSET, WorldModelProbeCallback, imagined_vs_real_return
from .world_model_learner import EVAL_ENVS, EVAL_HORIZONS, min_eval_transitions

DATA_DIR = "data"
"""Where a run with ``save_data`` writes its agent's transitions (a dataset directory)."""
AGENTS = (*MPC_AGENTS, *DYNA_AGENTS, *SIMPLE_AGENTS, *SB3_ALGOS, "random")
"""Every agent id ``cwm-rl train --agent`` accepts."""


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        env_id: a registered env id.
        agent: one of :data:`AGENTS`.
        steps: real env steps to train for (summed over sub-envs).
        seed: seeds the agent, its envs and the evaluation episodes.
        eval_every: env steps between evaluations (and checkpoints).
        eval_episodes: episodes per evaluation (deterministic actions, fixed seeds).
        env_kwargs: env constructor arguments.
        mpc: the model-based agents' config (``--set mpc.planner.horizon=8``); ``mpc.model`` follows ``agent``.
        dyna: the Dyna agent's config (``--set dyna.real_ratio=0.1``; its SAC/DQN hyperparameters are
            ``dyna.sb3_kwargs``); ``dyna.model`` follows ``agent``.
        simple: the SimPLe agents' config (``--set simple.horizon=50``; PPO's hyperparameters are
            ``simple.ppo_kwargs``); ``simple.model`` follows ``agent``.
        sb3_kwargs: SB3 hyperparameter overrides, merged over ``agents/configs/<algo>.yaml``.
        wm_probe_transitions: fresh random-policy transitions on which a model-based agent's world model (or a
            baseline's probe, see ``wm_probe``) is evaluated at every evaluation (prediction error at 1/5/10 steps,
            graph SHD/F1, imagined vs real return of the current policy); 0 turns it off, otherwise at least 73
            (one 10-step window in the first of the 8 evaluation sub-envs).
        wm_probe: SB3 baselines train a probe world model on the transitions they experience
            (:class:`~cwm_rl.agents.wm_probe.WorldModelProbeCallback`, cheap default schedule), so their ``wm_*``
            curves read like a model-based agent's; false turns it off.
        save_data: MPC agents only: at the end of the run, write the real transitions in the replay buffer (the
            last ``mpc.buffer_size``) to ``RUN_DIR/data/`` as a transition dataset (docs/data_format.md), so the
            data the agent learned from can be studied offline (``cwm-rl wm-train --data RUN_DIR/data``).
    """

    env_id: str = ""
    agent: str = "causal-mpc"
    steps: int = 20_000
    seed: int = 0
    eval_every: int = 5_000
    eval_episodes: int = 5
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    mpc: MPCConfig = field(default_factory=MPCConfig)
    dyna: DynaConfig = field(default_factory=DynaConfig)
    simple: SimPLeConfig = field(default_factory=SimPLeConfig)
    sb3_kwargs: dict[str, Any] = field(default_factory=dict)
    wm_probe_transitions: int = 1000
    wm_probe: bool = True
    save_data: bool = False


def resolve_config(overrides: dict[str, Any], config_file: str | os.PathLike[str] | None = None) -> TrainConfig:
    """The full config of a run: a YAML file (already resolved, e.g. an earlier ``RUN_DIR/config.yaml``) or the
    defaults, then the dotted-key ``overrides``. The agent's ``mpc`` or ``dyna`` section, when the file has none
    (a run of another kind of agent, see :func:`run_config_dict`, or no file), starts from the env's defaults
    (``agents/configs/{mpc,dyna}.yaml``)."""
    if config_file is not None:
        data = read_yaml_mapping(config_file)
        base, given = from_dict(TrainConfig, data, where=str(config_file)), set(data)
    else:
        base, given = TrainConfig(), set()
    who = apply_overrides(base, {k: v for k, v in overrides.items() if k in ("env_id", "agent")})
    if who.agent in MPC_AGENTS and "mpc" not in given:
        base.mpc = mpc_config_for(who.agent, env_id=who.env_id or None)
    if who.agent in DYNA_AGENTS and "dyna" not in given:
        base.dyna = dyna_config_for(who.agent, env_id=who.env_id or None)
    if who.agent in SIMPLE_AGENTS and "simple" not in given:
        base.simple = simple_config_for(who.agent, env_id=who.env_id or None)
    return apply_overrides(base, overrides)


def run_config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The run's config as ``config.yaml``, ``metrics.json`` and the snapshot hash hold it: the ``mpc`` and ``dyna``
    sections only for the agents that read them (a SAC run would otherwise list a planner it never ran)."""
    data = to_dict(cfg)
    if cfg.agent not in MPC_AGENTS:
        del data["mpc"]
    if cfg.agent not in DYNA_AGENTS:
        del data["dyna"]
    if cfg.agent not in SIMPLE_AGENTS:
        del data["simple"]
    return data


def check_train_config(cfg: TrainConfig) -> None:
    """One line per value that cannot work (before anything is written)."""
    if not cfg.env_id:
        raise ConfigError("no env given: pass --env ID (see `cwm-rl envs`)")
    spec_of(cfg.env_id)  # UnknownEnvError with the known ids
    if cfg.agent not in AGENTS:
        raise ConfigError(f"agent={cfg.agent!r} is not one of {', '.join(AGENTS)}")
    if cfg.wm_probe_transitions < 0:
        raise ConfigError(f"wm_probe_transitions={cfg.wm_probe_transitions} must be >= 0 (0: no probe)")
    if 0 < cfg.wm_probe_transitions < min_eval_transitions():
        raise ConfigError(
            f"wm_probe_transitions={cfg.wm_probe_transitions} is too few to judge a world model: it must be >= "
            f"{min_eval_transitions()} (spread over {EVAL_ENVS} random-policy sub-envs, the first must run one "
            f"{max(EVAL_HORIZONS)}-step evaluation window), or 0 for no probe"
        )
    for name in ("steps", "eval_every", "eval_episodes"):
        value = getattr(cfg, name)
        if value < 1:
            raise ConfigError(f"{name}={value} must be a positive integer")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} must be >= 0")
    if cfg.save_data and cfg.agent not in MPC_AGENTS:
        raise ConfigError(
            f"save_data is for the MPC agents ({', '.join(MPC_AGENTS)}), whose replay buffer keeps whole "
            f"trajectories; {cfg.agent!r} has none to save: drop save_data=true"
        )


def make_agent(cfg: TrainConfig, tensorboard_dir: str | None = None, log: Callable | None = None) -> Any:
    """Build the agent of ``cfg`` (the Python API behind ``cwm-rl train``)."""
    if cfg.agent in MPC_AGENTS:
        cfg.mpc.model = MPC_AGENTS[cfg.agent]
        return MPCAgent(cfg.env_id, cfg.mpc, seed=cfg.seed, env_kwargs=cfg.env_kwargs, log=log)
    if cfg.agent in DYNA_AGENTS:
        if cfg.sb3_kwargs:
            raise ConfigError(f"sb3_kwargs is for the SB3 agents; set {cfg.agent}'s with --set dyna.sb3_kwargs={{...}}")
        cfg.dyna.model = DYNA_AGENTS[cfg.agent]
        return DynaAgent(cfg.env_id, cfg.dyna, cfg.seed, cfg.env_kwargs, log=log, tensorboard_log=tensorboard_dir)
    if cfg.agent in SIMPLE_AGENTS:
        if cfg.sb3_kwargs:
            raise ConfigError(
                f"sb3_kwargs is for the SB3 agents; set {cfg.agent}'s PPO with --set simple.ppo_kwargs={{...}}"
            )
        cfg.simple.model = SIMPLE_AGENTS[cfg.agent]
        return SimPLeAgent(cfg.env_id, cfg.simple, cfg.seed, cfg.env_kwargs, log=log, tensorboard_log=tensorboard_dir)
    if cfg.agent in SB3_ALGOS:
        return SB3Agent(
            cfg.agent,
            cfg.env_id,
            seed=cfg.seed,
            hyperparams=cfg.sb3_kwargs,
            tensorboard_log=tensorboard_dir,
            env_kwargs=cfg.env_kwargs,
        )
    return RandomAgent(cfg.env_id, seed=cfg.seed, env_kwargs=cfg.env_kwargs)


def checkpoint_name(agent_id: str) -> str:
    """File name of an agent's checkpoint in its run directory: SB3's zip for the SB3 agents, one torch file for
    the model-based ones (the Dyna agent's holds its SB3 zip inside), ``agent.json`` for the random agent."""
    if agent_id in SB3_ALGOS:
        return "agent.zip"
    return "agent.pt" if agent_id in (*MPC_AGENTS, *DYNA_AGENTS, *SIMPLE_AGENTS) else "agent.json"


class _Evaluator:
    """Evaluates, logs and checkpoints every ``eval_every`` env steps; drives the progress bar.

    Every evaluation also judges the agent's world model (``wm_*`` keys, TensorBoard ``world_model_eval/``): a
    model-based agent's own, or the probe (:attr:`probe`) an SB3 baseline trains on the transitions it experiences.
    """

    RETURN_PROBE = {"horizon": 10, "starts": 8, "burn_in": 10}
    """Imagined vs real return: steps compared (the longest open-loop horizon), start states, real policy steps
    before the starts (so they are not only initial states; short enough for 25-step Chemistry episodes)."""

    def __init__(self, cfg: TrainConfig, run: Path, writer: Any, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.cfg, self.run, self.writer = cfg, run, writer
        self.next_at = cfg.eval_every
        self.curve: list[dict[str, float]] = []
        self.start = time.perf_counter()
        self.bar = tqdm(total=cfg.steps, desc=f"train {cfg.agent}", unit="step", disable=None if progress else True)
        self._next_postfix = 0
        self._last_eval = "-"
        self.probe: WorldModelProbeCallback | None = None  # an SB3 baseline's probe world model (_sb3_callback)
        self.config_dict = run_config_dict(cfg)  # what the snapshot's config hash is computed from
        # Snapshots (resume.pt): SB3's loop can only be snapshotted where it starts a rollout (safe_point); the
        # other agents after any step.
        self.safe_every_step = cfg.agent not in SB3_ALGOS and cfg.agent not in DYNA_AGENTS
        self.snapshot_due = False  # an evaluation since the last snapshot
        self.snapshot_step = -1  # env step of the last snapshot written
        self.stop_requested = False  # set by Ctrl-C (_stop_on_sigint): snapshot at the next safe point, then stop
        self.halted = False  # that snapshot is written: learning stops (the callback returns False)

    def __call__(self, agent: Any) -> bool:
        self.bar.n = min(agent.num_timesteps, self.cfg.steps)
        if agent.num_timesteps >= self._next_postfix:  # the live training return, every 1% of the run
            self._next_postfix = agent.num_timesteps + max(1, self.cfg.steps // 100)
            live = _recent_train_return(agent)
            if live is not None:
                self.bar.set_postfix(train_return=f"{live:.2f}", eval_return=self._last_eval, refresh=False)
        self.bar.refresh()
        if agent.num_timesteps >= self.next_at:
            self.evaluate(agent)
            while self.next_at <= agent.num_timesteps:
                self.next_at += self.cfg.eval_every
        if self.safe_every_step:
            self.safe_point(agent)
        return not self.halted

    def safe_point(self, agent: Any) -> None:
        """Called where the agent's whole state can be snapshotted exactly: writes ``resume.pt`` if an evaluation
        happened since the last snapshot or Ctrl-C asked to stop (then learning halts)."""
        if not (self.snapshot_due or self.stop_requested):
            return
        if agent.num_timesteps != self.snapshot_step:
            save_snapshot(
                self.run / SNAPSHOT_NAME,
                agent,
                self.state(),
                env_id=spec_of(self.cfg.env_id).id,
                agent_id=self.cfg.agent,
                config=self.config_dict,
                step=int(agent.num_timesteps),
                model=getattr(getattr(agent, "config", None), "model", None),  # MPC and Dyna agents' world model
            )
            self.snapshot_step = int(agent.num_timesteps)
        self.snapshot_due = False
        self.halted = self.stop_requested

    def state(self) -> dict[str, Any]:
        """The training script's part of a snapshot (the agent's is the agent object itself)."""
        return {
            "curve": self.curve,
            "next_at": self.next_at,
            "elapsed_s": time.perf_counter() - self.start,
            "probe": self.probe,
        }

    def load_state(self, state: dict[str, Any], agent: Any) -> None:
        """Continue from a snapshot's :meth:`state`, taken when ``agent`` was at its current step."""
        self.curve = list(state["curve"])
        self.next_at = int(state["next_at"])
        self.start = time.perf_counter() - float(state["elapsed_s"])  # wall times count the earlier part too
        self.probe = state["probe"]
        if self.probe is not None and self.writer is not None:
            self.probe.log = self.writer.add_scalar
        self.snapshot_step = int(agent.num_timesteps)

    def evaluate(self, agent: Any) -> dict[str, Any]:
        result = evaluate_agent(agent, self.cfg.env_id, self.cfg.eval_episodes, self.cfg.seed, self.cfg.env_kwargs)
        point = {
            "env_steps": int(agent.num_timesteps),
            "mean_return": result["mean_return"],
            "std_return": result["std_return"],
            "wall_time_s": round(time.perf_counter() - self.start, 3),
        }
        if self.cfg.wm_probe_transitions:  # how good the model and its graph are at this point of the run
            point.update({f"wm_{k}": v for k, v in self.world_model_eval(agent).items()})
        self.curve.append(point)
        if self.writer is not None:
            self.writer.add_scalar("eval/mean_return", result["mean_return"], agent.num_timesteps)
            self.writer.add_scalar("eval/std_return", result["std_return"], agent.num_timesteps)
            for key, value in point.items():
                if key.startswith("wm_"):
                    self.writer.add_scalar(f"world_model_eval/{key[3:]}", value, agent.num_timesteps)
            self.writer.flush()
        self._last_eval = f"{result['mean_return']:.2f}"
        self.bar.set_postfix(eval_return=self._last_eval)
        self.checkpoint(agent)
        return point

    def world_model_eval(self, agent: Any) -> dict[str, float]:
        """Prediction error at 1/5/10 steps and local-graph SHD/F1 on fresh random-policy transitions, plus the
        imagined vs real return of the current policy, for the agent's own world model or its probe's (empty while
        neither is fitted, or for agents with neither)."""
        if hasattr(agent, "world_model_metrics"):
            wm = agent.world_model_metrics(self.cfg.wm_probe_transitions)
            model, norm = getattr(agent, "model", None), getattr(agent, "norm", None)
        elif self.probe is not None and self.probe.ready:
            wm = self.probe.metrics(self.cfg.wm_probe_transitions)
            model, norm = self.probe.world_model, self.probe.norm
        else:
            return {}
        if wm and model is not None and norm is not None:
            with torch_threads(1):  # small batched steps: one thread is fastest, and robust on a busy machine
                returns = imagined_vs_real_return(
                    model,
                    norm,
                    lambda obs: agent.predict(obs, deterministic=True),
                    self.cfg.env_id,
                    self.cfg.env_kwargs,
                    seed=RETURN_SEED_OFFSET + self.cfg.seed,  # the same starts at every evaluation of the run
                    **self.RETURN_PROBE,
                )
            wm.update(returns)
        return wm

    def checkpoint(self, agent: Any) -> None:
        """Save the agent (the file ``cwm-rl eval`` reads) and the evaluation curve so far, both atomically; the
        snapshot ``--resume`` continues from follows at the next safe point."""
        agent.save(self.run / checkpoint_name(self.cfg.agent))
        atomic_write_json(self.run / "progress.json", {"curve": self.curve})
        self.snapshot_due = True


def train(cfg: TrainConfig, run_dir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.agent`` on ``cfg.env_id``; returns the final metrics (also ``RUN_DIR/metrics.json``)."""
    check_train_config(cfg)
    run = Path(run_dir)
    if (run / "config.yaml").exists():
        raise ConfigError(
            f"run directory {str(run)!r} already holds a run; choose a new --run-dir (or --resume a stopped one)"
        )
    writer = _LazyWriter(run / "tb")
    # The agent is built first: a bad agent/env pair, config key or kwarg fails before anything is written.
    agent = make_agent(cfg, str(run / "tb"), log=writer.add_scalar)
    run.mkdir(parents=True, exist_ok=True)
    save_yaml(run_config_dict(cfg), run / "config.yaml")
    return _run(cfg, run, agent, writer, _Evaluator(cfg, run, writer, progress))


def resume(run_dir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Continue a stopped or killed ``cwm-rl train`` run from its last snapshot (``resume.pt``) to its configured
    ``steps``; the result equals an uninterrupted run's (wall times aside) on the same CPU and library versions.

    A run stopped before its first snapshot starts again from step 0 (the same run, as the seed fixes it).
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"cannot resume {str(run)!r}: it is not a `cwm-rl train` run directory (no config.yaml)")
    if (run / "metrics.json").is_file():
        raise ConfigError(
            f"cannot resume {str(run)!r}: the run finished; start a new run with more steps "
            f"(--config {run / 'config.yaml'} --set steps=N --run-dir NEW)"
        )
    written = read_yaml_mapping(run / "config.yaml")
    cfg = from_dict(TrainConfig, written, where=str(run / "config.yaml"))
    check_train_config(cfg)
    writer = _LazyWriter(run / "tb")
    snapshot = run / SNAPSHOT_NAME
    if not snapshot.is_file():  # stopped before its first snapshot: the same run from the start
        agent = make_agent(cfg, str(run / "tb"), log=writer.add_scalar)
        return _run(cfg, run, agent, writer, _Evaluator(cfg, run, writer, progress))
    data = load_snapshot(
        snapshot, env_id=spec_of(cfg.env_id).id, agent_id=cfg.agent, config=run_config_dict(cfg), written=written
    )
    agent = data["agent"]
    _bind_outputs(agent, writer, run / "tb")
    evaluator = _Evaluator(cfg, run, writer, progress)
    evaluator.load_state(data["trainer"], agent)
    drift = version_drift(data["manifest"])
    if drift:
        evaluator.bar.write(
            f"warning: resuming with other library versions ({'; '.join(drift)}); the result may differ from an "
            "uninterrupted run"
        )
    set_global_rng_state(data["rng"])  # last: unpickling an SB3 model reseeds the global streams
    return _run(cfg, run, agent, writer, evaluator)


def _bind_outputs(agent: Any, writer: _LazyWriter, tensorboard_dir: Path) -> None:
    """Attach a resumed agent's logging to this process's TensorBoard writer (a snapshot holds none)."""
    if isinstance(agent, (MPCAgent, DynaAgent, SimPLeAgent)):
        agent.log = writer.add_scalar
    sb3 = agent.sb3 if isinstance(agent, DynaAgent) else agent
    if isinstance(sb3, SB3Agent) and sb3.model.tensorboard_log is not None:
        sb3.model.tensorboard_log = str(tensorboard_dir)


class _LazyWriter:
    """TensorBoard's SummaryWriter, created on the first scalar (so a run that fails early writes nothing)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _run(cfg: TrainConfig, run: Path, agent: Any, writer: _LazyWriter, evaluator: _Evaluator) -> dict[str, Any]:
    """Learn to ``cfg.steps`` with evaluations, then write ``metrics.json``."""
    remaining = cfg.steps - int(agent.num_timesteps)
    try:
        with _stop_on_sigint(evaluator):
            if remaining > 0 and cfg.agent in SB3_ALGOS:
                agent.learn(remaining, callback=_sb3_callback(evaluator, agent))
            elif remaining > 0 and cfg.agent in (*MPC_AGENTS, *DYNA_AGENTS, *SIMPLE_AGENTS):  # one call: schedules
                agent.learn(remaining, callback=evaluator)
            else:
                while agent.num_timesteps < cfg.steps and not evaluator.halted:
                    agent.learn(min(cfg.eval_every, cfg.steps - agent.num_timesteps), callback=evaluator)
        if evaluator.halted and agent.num_timesteps < cfg.steps:
            raise TrainingInterrupted(
                f"interrupted at {evaluator.snapshot_step:,} of {cfg.steps:,} env steps; the snapshot is saved: "
                f"continue with `cwm-rl train --resume {run}`"
            )
        if not evaluator.curve or evaluator.curve[-1]["env_steps"] != agent.num_timesteps:
            evaluator.evaluate(agent)  # the final policy is always evaluated
    finally:
        evaluator.bar.close()
        writer.close()
        if hasattr(agent, "close"):
            agent.close()
    if cfg.save_data:  # before metrics.json: a finished run has its data
        save_transitions(
            run / DATA_DIR,
            cfg.env_id,
            agent.buffer.dataset_arrays(),
            policy=f"{cfg.agent} replay buffer",
            seed=cfg.seed,
            num_envs=agent.buffer.n_envs,
            env_kwargs=cfg.env_kwargs,
            overwrite=True,
        )
    best = max(evaluator.curve, key=lambda p: p["mean_return"])
    metrics = {
        "env_id": spec_of(cfg.env_id).id,
        "agent": cfg.agent,
        "seed": cfg.seed,
        "env_steps": int(agent.num_timesteps),
        "final_eval_return": evaluator.curve[-1]["mean_return"],
        "final_eval_std": evaluator.curve[-1]["std_return"],
        "best_eval_return": best["mean_return"],
        "best_eval_env_steps": best["env_steps"],
        **{k: v for k, v in evaluator.curve[-1].items() if k.startswith("wm_")},  # the final world model
        "curve": [{k: v for k, v in p.items() if k != "wall_time_s"} for p in evaluator.curve],
        "config": run_config_dict(cfg),
    }
    # metrics.json holds only what the seed fixes (the same seed on the same CPU writes the same file); wall-clock
    # times go to timing.json.
    timing = {
        "wall_time_s": round(time.perf_counter() - evaluator.start, 3),
        "curve": [{"env_steps": p["env_steps"], "wall_time_s": p["wall_time_s"]} for p in evaluator.curve],
    }
    atomic_write_json(run / "metrics.json", metrics)
    atomic_write_json(run / "timing.json", timing)
    (run / SNAPSHOT_NAME).unlink(missing_ok=True)  # done: --resume refuses a finished run, the snapshot is dead weight
    return {**metrics, "wall_time_s": timing["wall_time_s"]}


@contextlib.contextmanager
def _stop_on_sigint(evaluator: _Evaluator) -> Iterator[None]:
    """While training, the first Ctrl-C (SIGINT) asks the agent to stop after its current env step (the callback
    returns False), so the checkpoint is saved from a consistent state; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if evaluator.stop_requested:
            raise KeyboardInterrupt
        evaluator.stop_requested = True
        evaluator.bar.write("stopping at the next safe point after saving a snapshot (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _recent_train_return(agent: Any, n: int = 10) -> float | None:
    """Mean return of the agent's last ``n`` finished training episodes (None before the first)."""
    if isinstance(agent, (MPCAgent, DynaAgent, SimPLeAgent)):
        returns = agent.episode_returns[-n:]
    elif isinstance(agent, SB3Agent):
        returns = [ep["r"] for ep in list(agent.model.ep_info_buffer or [])[-n:]]
    else:
        returns = []
    return float(sum(returns) / len(returns)) if returns else None


def _sb3_callback(evaluator: _Evaluator, agent: SB3Agent) -> Any:
    """The evaluator as an SB3 callback (called after every vector-env step), after the probe world model's
    callback when ``wm_probe`` is on (so an evaluation sees every transition up to it)."""
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    class _Callback(BaseCallback):
        def _on_step(self) -> bool:
            return evaluator(agent)

        def _on_rollout_start(self) -> None:  # SB3's loop holds no state in local variables here
            evaluator.safe_point(agent)

    cfg = evaluator.cfg
    if evaluator.probe is None and cfg.wm_probe and cfg.wm_probe_transitions:
        log = evaluator.writer.add_scalar if evaluator.writer is not None else None
        evaluator.probe = WorldModelProbeCallback(cfg.env_id, cfg.env_kwargs, seed=cfg.seed, log=log)
    return CallbackList([evaluator.probe, _Callback()]) if evaluator.probe is not None else _Callback()


__all__ = [
    "AGENTS",
    "TrainConfig",
    "check_train_config",
    "checkpoint_name",
    "make_agent",
    "resolve_config",
    "resume",
    "train",
]
