"""The sample-efficiency benchmark's verdicts (benchmarks/sample_efficiency.py): curves, targets, the claim."""

from __future__ import annotations

import pytest

from cwm_rl.bench import import_benchmark


@pytest.fixture(scope="module")
def se():
    return import_benchmark("sample_efficiency")


def _run(agent, seed, budget, curve, ood=0.0):
    return {
        "agent": agent,
        "seed": seed,
        "budget": budget,
        "curve": curve,
        "final_eval_return": curve[-1][1],
        "best_eval_return": max(v for _, v in curve),
        "ood_mean_return": ood,
        "wall_s": 1.0,
    }


def test_mean_curve_aligns_evaluations_whose_steps_differ_by_a_vector_step(se):
    runs = [_run("a", 0, 30, [(10, 1.0), (21, 2.0), (30, 3.0)]), _run("a", 1, 30, [(12, 3.0), (20, 0.0)])]
    assert se.mean_curve(runs) == [(12, 2.0), (21, 1.0)]  # k-th evaluations, the later step, the mean value
    assert se.first_at_or_above(se.mean_curve(runs), 1.5) == 12
    assert se.first_at_or_above(se.mean_curve(runs), 5.0) is None


def test_claim_counts_the_better_model_based_agent_and_only_above_random_play(se):
    base = [_run("ppo", s, 100, [(50, 0.0), (100, 1.0)]) for s in (0, 1)]
    dyna = [_run("causal-dyna", s, 20, [(10, 0.0), (20, 1.0)]) for s in (0, 1)]  # target at 20 steps: 5x
    mpc = [_run("causal-mpc", s, 20, [(10, 1.0), (20, 1.0)], ood=s) for s in (0, 1)]  # at 10 steps: 10x
    dense = [_run("mlp-mpc", s, 20, [(10, 0.0), (20, 0.0)], ood=-1.0) for s in (0, 1)]
    weak = [_run("random", s, 20, [(10, 0.0), (20, 0.0)]) for s in (0, 1)]
    out = se.summarise("pong", base + dyna + mpc + dense + weak)
    assert out["target"] == 1.0 and out["baseline_budget"] == 100
    assert out["agents"]["causal-dyna"]["speedup"] == 5.0 and out["agents"]["causal-mpc"]["speedup"] == 10.0
    assert out["claim_agent"] == "causal-mpc" and out["claim_speedup_met"] and out["target_above_random"]
    assert out["causal_beats_dense_ood"] and out["ood_gap"] == pytest.approx(1.5)
    assert out["ood_gap_se"] == pytest.approx(0.5)  # population std 0.5 over 2 seeds -> sample variance 0.5
    # a baseline that ends where random play ends proves nothing: the claim is not met however fast the agent is
    lucky = [_run("random", s, 20, [(10, 1.0), (20, 1.0)]) for s in (0, 1)]
    out = se.summarise("pong", base + dyna + mpc + dense + lucky)
    assert not out["target_above_random"] and not out["claim_speedup_met"]
    # below 5x is not met either
    slow = [_run("causal-dyna", s, 20, [(10, 0.0), (20, 0.5), (30, 1.0)]) for s in (0, 1)]
    out = se.summarise("pong", base + slow + weak)
    assert out["agents"]["causal-dyna"]["speedup"] == pytest.approx(100 / 30) and not out["claim_speedup_met"]


def test_a_variant_is_its_own_row_and_never_counts_for_the_claim(se):
    base = [_run("sac", s, 100, [(50, 0.0), (100, 1.0)]) for s in (0, 1)]
    mpc = [_run("causal-mpc", s, 20, [(10, 0.0), (20, 0.0)]) for s in (0, 1)]  # never reaches the target
    fast = [
        _run("causal-mpc", s, 20, [(10, 2.0), (20, 2.0)])
        | {"label": "causal-mpc+env", "overrides": {"mpc.reward": "env"}}
        for s in (0, 1)
    ]
    out = se.summarise("pusher", base + mpc + fast)
    variant = out["agents"]["causal-mpc+env"]
    assert variant["agent"] == "causal-mpc" and variant["overrides"] == {"mpc.reward": "env"}
    assert variant["speedup"] == 10.0 and variant["final_mean"] == 2.0  # its own seeds, not mixed with the default's
    assert out["agents"]["causal-mpc"]["speedup"] is None and out["agents"]["causal-mpc"]["overrides"] == {}
    assert out["claim_agent"] is None and not out["claim_speedup_met"]  # the shipped defaults did not make it


def test_variants_trained_alike_get_their_own_ood_gap_and_rows_keep_their_commits(se):
    base = [_run("sac", s, 100, [(50, 0.0), (100, 1.0)]) | {"commit": "aaaaaaa"} for s in (0, 1)]
    causal_label, dense_label = se.SETUPS["pusher"]["ood_pairs"][0]
    causal = [
        _run("causal-mpc", s, 20, [(20, 0.0)], ood=-1.0 + s) | {"label": causal_label, "commit": "bbbbbbb"}
        for s in (0, 1)
    ]
    dense = [_run("mlp-mpc", s, 20, [(20, 0.0)], ood=-3.0) | {"label": dense_label} for s in (0, 1)]
    out = se.summarise("pusher", base + causal + dense)
    (pair,) = out["variant_ood_gaps"]  # the other pair has no runs here: left out, not reported as zero
    assert (pair["causal"], pair["dense"]) == (causal_label, dense_label)
    assert pair["ood_gap"] == pytest.approx(2.5) and pair["ood_gap_se"] == pytest.approx(0.5)
    assert "ood_gap" not in out  # the shipped defaults' gap needs the default rows
    assert out["agents"]["sac"]["commits"] == ["aaaaaaa"] and out["agents"][causal_label]["commits"] == ["bbbbbbb"]
    assert out["agents"][dense_label]["commits"] == []  # unknown: runs kept from before commits were recorded


def test_a_variant_names_the_defaults_it_was_trained_on_under_its_own_settings(se):
    setup = {
        "baseline": ("sac", 100),
        "model_based": (("causal-mpc",), 20),
        "dyna": 20,
        "variant_base": ("old defaults", {"mpc.reward": "model", "mpc.updates": 150}),
        "variants": {"causal-mpc+env": ("causal-mpc", {"mpc.reward": "env"})},
    }
    rows = {label: (agent, overrides, steps) for label, agent, overrides, steps, *_ in se.rows_of(setup)}
    assert rows["causal-mpc"] == ("causal-mpc", {}, 20)  # the shipped defaults: no overrides, no base
    assert rows["causal-mpc+env"] == ("causal-mpc", {"mpc.reward": "env", "mpc.updates": 150}, 20)
    assert rows["sac"][2] == 100 and "causal-mpc+env" not in {label for label, *_ in se.rows_of(setup, False)}


def test_only_names_rows_that_exist_and_keeps_the_rest_from_an_existing_file(se, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        se.main(["--envs", "pusher", "--only", "no-such-row", "--out", str(tmp_path / "se.json")])
    assert exc.value.code == 2 and "no row named no-such-row" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # nothing to keep the other rows from
        se.main(["--envs", "pusher", "--only", "random", "--out", str(tmp_path / "missing.json")])
    assert exc.value.code == 2 and "existing results file" in capsys.readouterr().err


def test_a_kept_run_is_reused_only_when_its_whole_resolved_config_matches(se, tmp_path):
    import json

    import yaml

    from cwm_rl.agents.training import resolve_config, run_config_dict

    task = {"env_id": "cwm/Pusher2D-v0", "agent": "causal-mpc", "steps": 60, "seed": 0, "evals": 2, "episodes": 1}
    run = tmp_path / "causal-mpc-0"
    run.mkdir()
    keys = {"env_id": "cwm/Pusher2D-v0", "agent": "causal-mpc", "steps": 60, "seed": 0, "eval_every": 30}
    config = run_config_dict(resolve_config({**keys, "eval_episodes": 1, "wm_probe_transitions": 0}))
    (run / "metrics.json").write_text(
        json.dumps(
            {"final_eval_return": -1.0, "best_eval_return": -0.5, "curve": [{"env_steps": 60, "mean_return": -1.0}]}
        )
    )
    (run / "timing.json").write_text(json.dumps({"wall_time_s": 2.0}))
    (run / "ood_eval.json").write_text(json.dumps({"mean_return": -3.0, "returns": [-3.0]}))
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "mpc": {**config["mpc"], "reward": "model"}}))
    with pytest.raises(se.DifferentRun, match=r"mpc\.reward"):  # a key the task does not set, from other defaults
        se.run_one({**task, "run_dir": str(run)})
    (run / "config.yaml").write_text(yaml.safe_dump(config))  # no dyna section: train writes none for MPC agents
    out = se.run_one({**task, "run_dir": str(run)})
    assert (out["final_eval_return"], out["ood_mean_return"], out["wall_s"]) == (-1.0, -3.0, 2.0)
