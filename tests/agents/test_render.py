"""``cwm-rl eval RUN_DIR --render [PATH]``: a GIF of one deterministic episode, and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cwm_rl.agents.random_agent import RandomAgent
from cwm_rl.agents.render import episode_frames, render_episode_gif
from cwm_rl.agents.training import TrainConfig, train
from cwm_rl.agents.wm_probe import torch_threads
from cwm_rl.cli import main
from cwm_rl.errors import InvalidArgumentError


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("render") / "ppo"
    cfg = TrainConfig(
        env_id="cwm/Chemistry-v0",
        agent="ppo",
        steps=64,
        eval_every=64,
        eval_episodes=1,
        sb3_kwargs={"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 1},
    )
    with torch_threads(1):
        train(cfg, run, progress=False)
    return run


def test_eval_render_writes_a_gif_of_one_episode(ppo_run, tmp_path, capsys):
    gif = tmp_path / "out.gif"
    assert main(["eval", str(ppo_run), "--episodes", "1", "--render", str(gif)]) == 0
    out = capsys.readouterr().out
    assert str(gif) in out and "frames" in out
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames > 1
        assert im.size == (192, 96)  # the env's rgb_array frame (W x H)
    # One 25-step Chemistry episode (or less, if it reached its goal): the reset frame plus one per step.
    record = json.loads((ppo_run / "eval.json").read_text())["render"]
    assert record["path"] == str(gif) and 2 <= record["frames"] <= 26 and record["episode_ended"]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_eval_render_default_path_and_json(ppo_run, capsys):
    assert main(["eval", str(ppo_run), "--episodes", "1", "--render", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout stays pure JSON
    assert result["render"]["path"] == str(ppo_run / "episode.gif")
    with Image.open(ppo_run / "episode.gif") as im:
        assert im.n_frames == result["render"]["frames"]


@pytest.mark.parametrize(
    ("target", "message"),
    [("missing/out.gif", "does not exist"), ("out.png", "must end in .gif"), (".", "give a file name")],
)
def test_eval_render_bad_path_one_line_exit_2_nothing_written(ppo_run, tmp_path, capsys, target, message):
    (ppo_run / "eval.json").unlink(missing_ok=True)
    assert main(["eval", str(ppo_run), "--render", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (ppo_run / "eval.json").exists()  # checked before the evaluation ran
    assert not (tmp_path / "missing").exists() and not list(tmp_path.glob("*.png"))


def test_episode_frames_are_capped_and_match_the_env():
    agent = RandomAgent("cwm/InterventionalPong-v0", seed=0)
    frames, _, ended, fps = episode_frames(agent, "cwm/InterventionalPong-v0", max_frames=5)
    assert len(frames) == 5 and not ended and fps == 15  # a 1,000-step episode, cut at 5 frames
    assert all(f.dtype == np.uint8 and f.shape == (256, 256, 3) for f in frames)
    assert not all((f == frames[0]).all() for f in frames[1:])  # the ball moves


def test_render_api_rejects_a_missing_directory(tmp_path):
    agent = RandomAgent("cwm/Chemistry-v0", seed=0)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        render_episode_gif(agent, "cwm/Chemistry-v0", tmp_path / "nope" / "x.gif")
