"""World-model training end to end on a tiny dataset: run dir, checkpoint, metrics, reproducibility, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from torch.nn import functional as F

from cwm_rl.checkpoint import CheckpointError, load_checkpoint
from cwm_rl.config import ConfigError, apply_overrides
from cwm_rl.data import collect
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.wm_training import WMTrainConfig, make_optimizer, train_world_model


@pytest.fixture(scope="module")
def pong_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "pong"
    collect("cwm/InterventionalPong-v0", 1200, out, seed=0, num_envs=8, max_episode_steps=60)
    return out


def _cfg(data, **kw) -> WMTrainConfig:
    base = WMTrainConfig(
        env_id="cwm/InterventionalPong-v0",
        model="slot-transformer",
        data=str(data),
        window=8,
        batch_size=16,
        steps=30,
        eval_every=15,
        slot=SlotModelConfig(d_model=16, n_layers=1, n_heads=2),
    )
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize("model", ["slot-transformer", "mlp"])
def test_training_writes_a_complete_run_dir(pong_data, tmp_path, model):
    metrics = train_world_model(_cfg(pong_data, model=model), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoint.pt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["step"] == 30 and saved["model"] == model and saved["env_id"] == "cwm/InterventionalPong-v0"
    assert 0 <= saved["prediction_mse"] < 10
    if model == "mlp":
        assert "f1" not in saved
    else:
        assert 0 <= saved["f1"] <= 1 and saved["shd"] >= 0 and "auroc_with_self" in saved
    ckpt = load_checkpoint(run / "checkpoint.pt", expect={"env_id": "cwm/InterventionalPong-v0", "model": model})
    assert ckpt["manifest"]["step"] == 30 and "torch" in ckpt["manifest"]["versions"]
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(run / "checkpoint.pt", expect={"env_id": "cwm/Chemistry-v0"})
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == model and config["slot"]["d_model"] == 16
    assert metrics["parameters"] > 0


def test_training_reduces_the_prediction_error(pong_data, tmp_path):
    short = train_world_model(_cfg(pong_data, steps=2, eval_every=2), tmp_path / "a", progress=False)
    longer = train_world_model(_cfg(pong_data, steps=80, eval_every=80), tmp_path / "b", progress=False)
    assert longer["prediction_mse"] < 0.85 * short["prediction_mse"]


def test_same_seed_same_metrics(pong_data, tmp_path):
    train_world_model(_cfg(pong_data), tmp_path / "a", progress=False)
    train_world_model(_cfg(pong_data), tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()


def test_truncated_checkpoint_is_detected(pong_data, tmp_path):
    train_world_model(_cfg(pong_data, steps=15), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "lstm"}, "model='lstm' is not one of"),
        ({"steps": 0}, "steps=0 must be a positive integer"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"lr_schedule": "linear"}, "lr_schedule='linear' is not one of"),
        ({"dense_warmup": -1}, "dense_warmup=-1 must be an integer >= 0"),
    ],
)
def test_bad_config_values(pong_data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        train_world_model(apply_overrides(_cfg(pong_data), overrides), tmp_path / "run", progress=False)


def test_data_from_another_env_is_rejected(pong_data, tmp_path):
    from cwm_rl.errors import UserError

    with pytest.raises(UserError, match="Chemistry"):
        train_world_model(_cfg(pong_data, env_id="cwm/Chemistry-v0"), tmp_path / "run", progress=False)


def test_oracle_uses_the_true_graph(pong_data, tmp_path):
    metrics = train_world_model(
        _cfg(
            pong_data,
            model="oracle",
            slot=SlotModelConfig(d_model=16, n_layers=1, n_heads=2, temporal="attention", attention="softmax"),
        ),
        tmp_path / "run",
        progress=False,
    )
    assert metrics["model"] == "oracle"


def test_wm_eval_rejects_a_checkpoint_of_another_model_and_data_of_another_env(pong_data, tmp_path):
    import shutil

    from cwm_rl.data import collect
    from cwm_rl.errors import UserError
    from cwm_rl.wm_training import evaluate_run

    train_world_model(_cfg(pong_data, model="mlp", steps=15), tmp_path / "mlp", progress=False)
    train_world_model(_cfg(pong_data, steps=15), tmp_path / "tr", progress=False)
    shutil.copy(tmp_path / "mlp" / "checkpoint.pt", tmp_path / "tr" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="model='mlp' but 'slot-transformer' was expected"):
        evaluate_run(tmp_path / "tr", ood_steps=0)
    chem = collect("cwm/Chemistry-v0", 300, tmp_path / "chem", num_envs=4).path
    with pytest.raises(UserError, match="Chemistry"):
        evaluate_run(tmp_path / "mlp", chem, ood_steps=0)


def test_mechanism_loss_leaves_out_the_slots_that_were_intervened_on():
    from cwm_rl.wm_training import mechanism_loss

    target = torch.zeros(2, 3, 5)  # slots of widths (1, 4): entry 0 is slot 0, entries 1-4 slot 1
    pred = torch.zeros(2, 3, 5)
    pred[0, 1, 1:] = 100.0  # slot 1 of one transition is far off ...
    intervened = torch.zeros(2, 3, 2, dtype=torch.bool)
    intervened[0, 1, 1] = True  # ... because it was intervened on there
    pred[1, 2, 0] = 2.0  # a real error elsewhere counts
    kept = 2 * 3 * 5 - 4
    assert mechanism_loss(pred, target, intervened, (1, 4)).item() == pytest.approx(4.0 / kept)
    assert mechanism_loss(pred, target, torch.zeros_like(intervened), (1, 4)).item() == pytest.approx(
        F.mse_loss(pred, target).item()
    )
    everything = mechanism_loss(pred.requires_grad_(), target, torch.ones_like(intervened), (1, 4))
    assert everything.item() == 0.0 and everything.requires_grad
    # the absolute error: the same entries count, each by |error|
    assert mechanism_loss(pred, target, intervened, (1, 4), "l1").item() == pytest.approx(2.0 / kept)
    assert mechanism_loss(pred, target, None, None, "l1").item() == pytest.approx((400.0 + 2.0) / 30)
    with pytest.raises(ConfigError, match="prediction_loss='huber'"):
        mechanism_loss(pred, target, None, None, "huber")


def test_l1_prediction_loss_fits_the_median_not_the_mean():
    """A change that happens in 1 of 4 cases and cannot be told from the input: the squared error settles on its
    mean (a phantom quarter-step every time), the absolute error on the median (no change)."""
    from cwm_rl.wm_training import mechanism_loss

    target = torch.tensor([0.0, 0.0, 0.0, 4.0])
    fitted = {}
    for kind in ("mse", "l1"):
        guess = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([guess], lr=0.01)
        for _ in range(2000):
            opt.zero_grad()
            mechanism_loss(guess.expand(4), target, None, None, kind).backward()
            opt.step()
        fitted[kind] = guess.item()
    assert fitted["mse"] == pytest.approx(1.0, abs=1e-3)
    assert abs(fitted["l1"]) < 0.02


def test_world_model_loss_masks_interventions_only_when_asked(pong_data):
    from cwm_rl.data import TransitionWindows
    from cwm_rl.models.factory import make_world_model
    from cwm_rl.wm_evaluation import Normalizer
    from cwm_rl.wm_training import world_model_loss

    ds = TransitionWindows(pong_data, 8)
    batch = {k: torch.stack([ds[i][k] for i in range(32)]) for k in ds[0]}
    assert batch["intervened"].any()  # the data has interventions to leave out
    dims = [s.stop - s.start for s in ds.slot_slices.values()]
    torch.manual_seed(0)
    model = make_world_model("slot-ssm", dims, ("discrete", 3), SlotModelConfig(d_model=16)).eval()  # no gate noise
    norm = Normalizer.fit(ds, list(range(len(ds))), action_start=0)
    on, off = WMTrainConfig(model="slot-ssm"), WMTrainConfig(model="slot-ssm", mask_interventions=False)
    masked = world_model_loss(model, batch, norm, on, dims)[1]["prediction"]
    plain = world_model_loss(model, batch, norm, off, dims)[1]["prediction"]
    no_dims = world_model_loss(model, batch, norm, on)[1]["prediction"]
    assert masked.item() != pytest.approx(plain.item()) and no_dims.item() == pytest.approx(plain.item())


def test_dense_warmup_opens_every_gate_and_drops_the_penalty(pong_data, tmp_path):
    """A dense step runs with every gate open and leaves the sparsity penalty out of the total; a run that is all
    warm-up therefore never moves the gates' parameters, and one without it does."""
    from cwm_rl.data import TransitionWindows
    from cwm_rl.models.factory import make_world_model
    from cwm_rl.wm_evaluation import Normalizer
    from cwm_rl.wm_training import load_run, world_model_loss

    ds = TransitionWindows(pong_data, 8)
    batch = {k: torch.stack([ds[i][k] for i in range(32)]) for k in ds[0]}
    dims = [s.stop - s.start for s in ds.slot_slices.values()]
    torch.manual_seed(0)
    model = make_world_model("slot-ssm", dims, ("discrete", 3), SlotModelConfig(d_model=16)).eval()
    torch.nn.init.constant_(model.blocks[0].cross.edge_bias, -50.0)  # every gate shut
    norm = Normalizer.fit(ds, list(range(len(ds))), action_start=0)
    cfg = WMTrainConfig(model="slot-ssm", sparsity_weight=0.5)
    total, parts = world_model_loss(model, batch, norm, cfg, dims)
    total_dense, parts_dense = world_model_loss(model, batch, norm, cfg, dims, dense=True)
    assert parts["prediction"].item() != pytest.approx(parts_dense["prediction"].item())  # the gates opened
    expected = total_dense.item() + cfg.sparsity_weight * parts_dense["sparsity"].item()
    assert parts_dense["sparsity"].item() > 0 and total.item() != pytest.approx(expected)
    weighted = (parts_dense["prediction"] + cfg.reward_weight * parts_dense["reward"]).item()
    assert total_dense.item() == pytest.approx(weighted + cfg.termination_weight * parts_dense["termination"].item())
    assert not model.blocks[0].cross.force_open  # restored after the step

    def gate_params(run):
        cross = load_run(run)[1].blocks[0].cross
        return torch.cat([p.flatten() for p in (cross.edge_q.weight, cross.edge_k.weight, cross.edge_bias)])

    torch.manual_seed(0)
    init = make_world_model("slot-ssm", dims, ("discrete", 3), SlotModelConfig(d_model=16, n_heads=2)).blocks[0]
    init_params = torch.cat([p.flatten() for p in (init.cross.edge_q.weight, init.cross.edge_k.weight)])
    for warmup in (30, 0):
        run = tmp_path / f"warmup{warmup}"
        train_world_model(_cfg(pong_data, model="slot-ssm", dense_warmup=warmup), run, progress=False)
        params = gate_params(run)
        moved = not torch.equal(params[: len(init_params)], init_params)
        assert moved == (warmup == 0)


@pytest.mark.parametrize("schedule, final_lr", [("constant", 1e-3), ("cosine", 1e-4)])
def test_learning_rate_schedule(schedule, final_lr):
    cfg = WMTrainConfig(lr=1e-3, steps=20, lr_schedule=schedule)
    model = torch.nn.Linear(2, 2)
    optim, sched = make_optimizer(model, cfg)
    lrs = []
    for _ in range(cfg.steps):
        optim.step()
        if sched is not None:
            sched.step()
        lrs.append(optim.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(final_lr)
    if schedule == "cosine":  # decays monotonically, half-way at the middle
        assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
        assert lrs[cfg.steps // 2 - 1] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))


def test_evaluation_frequency_does_not_change_training(pong_data, tmp_path):
    """Evaluating must not consume the training run's random numbers (hard gates sample Gumbel noise)."""
    runs = {}
    for every in (10, 30):
        cfg = _cfg(pong_data, model="slot-ssm", eval_every=every)
        train_world_model(cfg, tmp_path / f"every{every}", progress=False)
        runs[every] = load_checkpoint(tmp_path / f"every{every}" / "checkpoint.pt")["model_state"]
    for name, value in runs[10].items():
        assert torch.equal(value, runs[30][name]), name
