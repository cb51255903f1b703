"""The OOD-factors benchmark (benchmarks/ood_factors.py): which of a twin's changes costs an agent its return."""

from __future__ import annotations

import json

import pytest

from cwm_rl.bench import import_benchmark


@pytest.fixture(scope="module")
def of():
    return import_benchmark("ood_factors")


def test_settings_are_the_base_env_each_changed_argument_alone_and_the_twin(of):
    settings = of.factors("cwm/Pusher2D-v0")
    assert settings == [
        ("base", "cwm/Pusher2D-v0", {}),
        ("box_mass=3.0", "cwm/Pusher2D-v0", {"box_mass": 3.0}),
        ("distractor_speed=0.05", "cwm/Pusher2D-v0", {"distractor_speed": 0.05}),
        ("OOD twin", "cwm/Pusher2D-OOD-v0", {}),
    ]
    assert of.group_name("runs/causal-mpc+env-reward-12") == "causal-mpc+env-reward"


def test_groups_average_over_seeds_and_report_the_change_from_the_base_env(of):
    runs = [
        {"group": "a", "env_id": "e", "agent": "x", "seed": s, "scores": {"base": base, "OOD twin": ood}}
        for s, (base, ood) in enumerate([(-10.0, -30.0), (-20.0, -20.0)])
    ]
    (row,) = of.summarise(runs)
    assert row["seeds"] == [0, 1] and row["base"]["mean"] == -15.0
    assert row["OOD twin"] == {"mean": -25.0, "std": 5.0, "change_mean": -10.0, "change_std": 10.0}


def test_scores_a_saved_run_on_each_setting_and_reads_a_twin_score_taken_the_same_way(of, tmp_path, capsys):
    from cwm_rl.agents.training import resolve_config, train

    run = tmp_path / "random-0"
    cfg = {"env_id": "cwm/Pusher2D-v0", "agent": "random", "steps": 64, "seed": 0, "eval_every": 64}
    metrics = train(resolve_config({**cfg, "eval_episodes": 2, "wm_probe_transitions": 0}), run, progress=False)
    out = tmp_path / "ood.json"
    assert of.main([str(run), "--episodes", "2", "--jobs", "1", "--replay-all", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["runs"]
    assert list(result["scores"]) == ["base", "box_mass=3.0", "distractor_speed=0.05", "OOD twin"]
    assert result["scores"]["base"] == pytest.approx(metrics["final_eval_return"])  # random play: same episodes
    # a twin score taken the same way (ood_eval.json) is read, not replayed
    (run / "ood_eval.json").write_text(json.dumps({"mean_return": -7.0, "episodes": 2}))
    assert of.scored_already(run, 2) == {"OOD twin": -7.0}
    assert of.scored_already(run, 3) == {}  # another protocol: replayed
    assert of.main([str(run), "--episodes", "2", "--jobs", "1", "--out", str(out)]) == 0
    (again,) = json.loads(out.read_text())["runs"]
    assert again["scores"] == {**result["scores"], "OOD twin": -7.0}
    with pytest.raises(SystemExit) as exc:
        of.main([str(tmp_path / "nowhere")])
    assert exc.value.code == 2 and "not a finished" in capsys.readouterr().err
