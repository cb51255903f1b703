"""The Pusher2D diagnosis's rows (benchmarks/pusher_model_diagnosis.py): which data a row trains on."""

from __future__ import annotations

import argparse

import pytest

from cwm_rl.bench import import_benchmark
from cwm_rl.data import collect


@pytest.fixture(scope="module")
def diagnosis():
    return import_benchmark("pusher_model_diagnosis")


def test_a_row_trains_on_generated_data_or_on_a_dataset_directory(diagnosis, tmp_path):
    assert diagnosis.grid_row("pushy,mlp,100,prediction_loss=l1") == ("pushy", "mlp", 100.0, {"prediction_loss": "l1"})
    run_data = tmp_path / "causal-mpc-0" / "data"  # what `cwm-rl train --set save_data=true` leaves
    collect("cwm/Pusher2D-v0", 32, run_data, num_envs=2)
    data, kind, weight, extra = diagnosis.grid_row(f"{run_data},slot-ssm,1,sparsity_weight=0")
    assert (data, kind, weight, extra) == (str(run_data), "slot-ssm", 1.0, {"sparsity_weight": 0})
    assert diagnosis.data_label(data) == "data of causal-mpc-0"
    assert diagnosis.data_label("random") == "random"


@pytest.mark.parametrize("text", ["nowhere,mlp,1", "pushy,lstm,1", "pushy,mlp,heavy", "pushy,mlp,1,l1"])
def test_a_bad_row_is_refused_with_what_is_expected(diagnosis, text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected DATA,MODEL,REWARD_WEIGHT|is not a number"):
        diagnosis.grid_row(text)
