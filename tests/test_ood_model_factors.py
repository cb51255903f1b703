"""The world-model OOD-factors benchmark (benchmarks/ood_model_factors.py): per-slot errors under each twin change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cwm_rl.bench import import_benchmark
from cwm_rl.data import collect, load_dataset


@pytest.fixture(scope="module")
def omf():
    return import_benchmark("ood_model_factors")


def test_the_twin_setting_is_the_base_env_with_every_changed_argument(omf, tmp_path):
    settings = omf.settings_data("cwm/Pusher2D-v0", 64, tmp_path)
    assert list(settings) == ["base", "box_mass=3.0", "distractor_speed=0.05", "OOD twin"]
    twin = collect("cwm/Pusher2D-OOD-v0", 64, tmp_path / "registered-twin", seed=omf.EVAL_SEED, num_envs=16)
    ours, theirs = load_dataset(settings["OOD twin"]).arrays, load_dataset(twin.path).arrays
    assert np.array_equal(ours["obs"], theirs["obs"]) and np.array_equal(ours["next_obs"], theirs["next_obs"])
    base = load_dataset(settings["base"]).arrays
    assert not np.array_equal(base["next_obs"], ours["next_obs"])  # the settings do differ


def test_summary_averages_over_seeds_with_each_seeds_ratio_to_its_own_base(omf):
    def run(seed, base, changed):
        settings = {"base": {"k": base, "k/goal": 0.0}, "x=1": {"k": changed, "k/goal": 0.0}}
        return {"env_id": "e", "variant": "m", "seed": seed, "settings": settings}

    summary = omf.summarise([run(0, 1.0, 3.0), run(1, 2.0, 2.0)])["e"]["m"]
    assert summary["seeds"] == [0, 1]
    cell = summary["settings"]["x=1"]["k"]
    assert cell["mean"] == 2.5 and cell["std"] == 0.5
    assert cell["ratio_mean"] == pytest.approx(2.0) and cell["ratio_std"] == pytest.approx(1.0)  # ratios 3 and 1
    assert summary["settings"]["x=1"]["k/goal"]["ratio_mean"] is None  # a slot predicted exactly: no ratio


def test_quick_run_writes_every_setting_for_every_model(omf, tmp_path):
    out = tmp_path / "omf.json"
    models = ["slot-ssm (sparse)", "mlp (Pusher2D agent's)"]  # a default one and one named only on request
    assert (
        omf.main(["--envs", "cwm/Pusher2D-v0", "--quick", "--jobs", "1", "--models", *models, "--out", str(out)]) == 0
    )
    payload = json.loads(out.read_text())
    assert {r["variant"] for r in payload["runs"]} == set(models)
    assert payload["config"]["models"]["mlp (Pusher2D agent's)"] == ["mlp", 0.0, {"prediction_loss": "l1"}]
    for r in payload["runs"]:
        assert list(r["settings"]) == ["base", "box_mass=3.0", "distractor_speed=0.05", "OOD twin"]
        assert all(np.isfinite(r["settings"][s]["open_loop_mse_10/box"]) for s in r["settings"])
