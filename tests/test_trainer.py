"""The generic trainer: exact resume, run folders, load_method, NaN guard, batch-size phases, CLI;
damaged run folders give one line naming the file."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mammosynth.data.birads import map_cbis_margin, map_cbis_shape, map_pathology
from mammosynth.data.dataset import LesionDataset
from mammosynth.data.records import LesionRecord
from mammosynth.data.store import StoreWriter
from mammosynth.errors import CheckpointError, ConfigError, DataError
from mammosynth.models.mask_dcgan import MaskDCGANConfig
from mammosynth.train.checkpoint import decode_tree, encode_tree, load_checkpoint
from mammosynth.train.method import Method, TrainConfig
from mammosynth.train.run import create_run_dir, load_method, read_run_config, resolve_run
from mammosynth.train.trainer import Trainer, TrainingDiverged, train

pytestmark = pytest.mark.usefixtures("one_thread")



def ellipse_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    a, b = rng.uniform(0.15, 0.3, 2) * size
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def make_store(path: Path, n: int = 16, size: int = 32) -> Path:
    """A tiny store of random-ellipse lesions, all in the train split."""
    rng = np.random.default_rng(1)
    with StoreWriter(path, patch_size=size, normal_size=(32, 24)) as w:
        for i in range(n):
            w.add_lesion(LesionRecord(
                source="test", source_id=f"L{i}", patient_id=f"P{i}", patch=rng.random((size, size)).astype(np.float32),
                mask=ellipse_mask(rng, size), shape=map_cbis_shape("OVAL"), margin=map_cbis_margin("CIRCUMSCRIBED"),
                pathology=map_pathology("BENIGN"), split_hint="train",
            ))
    return path


def tiny_dcgan(**kw) -> MaskDCGANConfig:
    base = dict(steps=6, batch_size=4, nz=8, ngf=4, ndf=4, log_every=1, sample_every=3, ckpt_every=3, n_samples=4, seed=3)
    base.update(kw)
    return MaskDCGANConfig(**base)


@dataclass
class TinyConfig(TrainConfig):
    lr: float = 0.1
    nan_at: int = -1  # step at which the loss turns NaN (tests the guard)


class TinyRegression(Method):
    """Predict a mask's area fraction from the patch: one SGD optimizer, no BatchNorm."""

    name = "tiny-regression"
    Config = TinyConfig
    ema_networks = ("model",)

    def build(self) -> None:
        self.seen_batch_sizes: list[int] = []
        self.nets["model"] = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))

    def build_optimizers(self):
        return {"main": torch.optim.SGD(self.nets["model"].parameters(), lr=self.cfg.lr)}

    def make_dataset(self, store_path, split="train"):
        return LesionDataset(store_path, split=split, augment=True)

    def train_step(self, batch, ctx):
        self.seen_batch_sizes.append(int(batch["image"].shape[0]))
        pred = ctx.nets["model"](batch["image"]).squeeze(1)
        loss = ((pred - batch["mask"].mean(dim=(1, 2, 3))) ** 2).mean()
        if ctx.step == self.cfg.nan_at:
            loss = loss * float("nan")
        ctx.backward_step(loss, "main")
        return {"loss": loss.detach()}


class PhasedRegression(TinyRegression):
    def batch_size(self, step):
        return 2 if step < 3 else 4


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "tiny.h5")


@pytest.fixture(scope="module")
def dcgan_run(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return train("mask-dcgan", store, out, tiny_dcgan(steps=4, sample_every=2, ckpt_every=2), progress=False)


def _checkpoint_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint" / "state.safetensors"))


def test_resume_is_bitwise_exact(store, tmp_path, monkeypatch):
    """2N steps in one go == N steps + resume + N steps, for every tensor (nets, EMA, Adam)."""
    out = tmp_path / "runs"
    full = train("mask-dcgan", store, out, tiny_dcgan(steps=6), progress=False)
    half = train("mask-dcgan", store, out, tiny_dcgan(steps=3), progress=False)
    assert (full.name, half.name) == ("00000-mask-dcgan", "00001-mask-dcgan")

    def no_unpickling(*a, **k):
        raise AssertionError("torch.load must never be used to read a checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    resumed = train("mask-dcgan", store, out, tiny_dcgan(steps=6), resume=True, progress=False)
    assert resumed == half  # the latest run of the method in --out
    a, b = _checkpoint_tensors(full), _checkpoint_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("optimizers/G/state") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert load_checkpoint(resumed / "checkpoint")[1]["step"] == 6
    assert {p.suffix for p in (resumed / "checkpoint").iterdir()} == {".safetensors", ".json"}
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicate lines after resume


def test_resume_refuses_a_model_config_change(store, tmp_path):
    out = tmp_path / "runs"
    train("mask-dcgan", store, out, tiny_dcgan(steps=2, ckpt_every=0, sample_every=0), progress=False)
    with pytest.raises(CheckpointError, match=r"lr: 0\.0002 -> 0\.001"):
        train("mask-dcgan", store, out, tiny_dcgan(steps=4, lr=1e-3), resume=True, progress=False)


def test_resume_accepts_a_checkpoint_from_before_a_field_existed(store, tmp_path):
    """A checkpoint written before a config field was added trained with that field's default:
    resuming with the default works; asking for another value is a model change and refused."""
    out = tmp_path / "runs"
    run = train("mask-dcgan", store, out, tiny_dcgan(steps=2, ckpt_every=2, sample_every=0), progress=False)
    state = run / "checkpoint" / "state.json"
    doc = json.loads(state.read_text())
    del doc["config"]["lr"]  # as if `lr` were new since this checkpoint
    state.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"lr: 0\.0002 -> 0\.001"):
        train("mask-dcgan", store, out, tiny_dcgan(steps=4, lr=1e-3), resume=True, progress=False)
    resumed = train("mask-dcgan", store, out, tiny_dcgan(steps=4), resume=True, progress=False)
    assert load_checkpoint(resumed / "checkpoint")[1]["step"] == 4


def test_run_folder_layout(dcgan_run, store):
    from PIL import Image

    assert dcgan_run.name == "00000-mask-dcgan"
    doc = read_run_config(dcgan_run)
    assert doc["method"] == "mask-dcgan" and doc["method_version"] == 1 and doc["mammosynth_version"]
    assert doc["config"]["steps"] == 4 and doc["config"]["ngf"] == 4 and "created" in doc
    assert doc["data"]["path"] == str(store.resolve()) and doc["data"]["patch_size"] == 32
    weights = load_file(str(dcgan_run / "model.safetensors"))
    assert {k.split(".")[0] for k in weights} == {"generator", "discriminator"}
    grids = sorted(p.name for p in (dcgan_run / "samples").iterdir())
    assert grids == ["step_000002.png", "step_000004.png"]
    assert Image.open(dcgan_run / "samples" / grids[0]).size == (2 + 2 * 34, 2 + 2 * 34)  # 2x2 grid of 32 px
    lines = [json.loads(x) for x in (dcgan_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for key in ("loss_d", "loss_g", "images_per_s", "s_per_kimg", "peak_mem_mb", "lr"):
        assert key in lines[-1]
    assert resolve_run(dcgan_run.parent) == dcgan_run


def test_load_method_uses_ema_weights(dcgan_run):
    ema = load_method(dcgan_run)
    raw = load_method(dcgan_run, ema=False)
    g_file = load_file(str(dcgan_run / "model.safetensors"))
    for k, v in ema.nets["generator"].state_dict().items():
        assert torch.equal(v, g_file[f"generator.{k}"])
    diff = [not torch.equal(a, b) for a, b in zip(ema.nets["generator"].parameters(), raw.nets["generator"].parameters())]
    assert any(diff)  # EMA differs from the training weights
    assert not ema.nets["generator"].training


def test_load_method_mismatches_name_the_file(dcgan_run, tmp_path):
    run = tmp_path / "00000-mask-dcgan"
    shutil.copytree(dcgan_run, run)
    doc = json.loads((run / "config.json").read_text())
    with pytest.raises(CheckpointError, match="'infill' run was asked for"):
        load_method(run, expect="infill")
    (run / "config.json").write_text(json.dumps({**doc, "method_version": 99}))
    with pytest.raises(CheckpointError, match=r"config\.json.*version 99"):
        load_method(run)
    (run / "config.json").write_text(json.dumps({**doc, "config": {**doc["config"], "ngf": 8}}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: shape mismatch in 'generator'"):
        load_method(run)
    with pytest.raises(CheckpointError, match="holds no numbered runs"):
        resolve_run(tmp_path / "00000-mask-dcgan" / "samples")


def test_nan_guard_keeps_last_good_checkpoint(store, tmp_path):
    cfg = TinyConfig(steps=10, batch_size=4, nan_at=5, ckpt_every=2, log_every=1, sample_every=0)
    with pytest.raises(TrainingDiverged, match=r"step 5: loss = nan is not finite.*step 4"):
        train(TinyRegression, store, tmp_path, cfg, progress=False)
    state, meta = load_checkpoint(tmp_path / "00000-tiny-regression" / "checkpoint")
    assert meta["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["nets"]["model"].values())


def test_batch_size_phases_rebuild_the_loader(store, tmp_path):
    trainer = Trainer(PhasedRegression, store, tmp_path, TinyConfig(steps=6, batch_size=8, ckpt_every=0, sample_every=0), progress=False)
    trainer.run()
    assert trainer.method.seen_batch_sizes == [2, 2, 2, 4, 4, 4]
    # 3x2 items, then 2x4 reach 14 of 16; the 2 left are dropped and epoch 1 starts
    assert (trainer.epoch, trainer.epoch_pos) == (1, 4)


def test_too_small_split_is_a_clear_error(store, tmp_path):
    with pytest.raises(DataError, match="fewer than the batch size 64"):
        train(TinyRegression, store, tmp_path, TinyConfig(steps=1, batch_size=64), progress=False)


def test_checkpoint_tree_round_trip():
    tensors: dict[str, torch.Tensor] = {}
    tree = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}}, "betas": (0.9, 0.999),
            "np": np.arange(5, dtype=np.uint32), "none": None, "s": "x"}
    doc = json.loads(json.dumps(encode_tree(tree, tensors)))  # must be plain JSON
    back = decode_tree(doc, tensors)
    assert back["betas"] == (0.9, 0.999) and back["s"] == "x" and back["none"] is None
    assert torch.equal(back["state"][0]["exp_avg"], torch.ones(2, 2))
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        encode_tree({"bad": object()}, {})


def test_run_numbering(tmp_path):
    assert create_run_dir(tmp_path, "a").name == "00000-a"
    (tmp_path / "00007-b").mkdir()
    assert create_run_dir(tmp_path, "a").name == "00008-a"


# -- CLI -------------------------------------------------------------------------------------
def test_cli_unknown_method(capsys):
    from mammosynth.cli import main

    assert main(["train", "nope", "--data", "x.h5", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown method 'nope'" in err and "mask-dcgan" in err and "\n" not in err


def test_cli_dry_run_and_help(capsys):
    from mammosynth.cli import main

    assert main(["train", "mask-dcgan", "--data", "x.h5", "--out", "o", "--dry-run", "--set", "lr=0.001", "--steps", "7"]) == 0
    text = capsys.readouterr().out
    assert "mask-dcgan-demo.yaml" in text
    cfg = __import__("yaml").safe_load(text)
    assert cfg["lr"] == 0.001 and cfg["steps"] == 7 and cfg["size"] == 64
    assert main(["train", "--help"]) == 0
    helptext = capsys.readouterr().out
    for opt in ("--data", "--out", "--config", "--set", "--steps", "--resume", "--dry-run", "--device"):
        assert opt in helptext


def test_cli_trains_and_resumes(store, tmp_path, capsys):
    from mammosynth.cli import main

    common = ["train", "mask-dcgan", "--data", str(store), "--out", str(tmp_path), "--no-progress",
              "--set", "size=32", "--set", "ngf=4", "--set", "ndf=4", "--set", "nz=8", "--set", "batch_size=4"]
    assert main(common + ["--steps", "2"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run == tmp_path / "00000-mask-dcgan"
    assert main(["train", "mask-dcgan", "--data", str(store), "--out", str(tmp_path), "--no-progress", "--resume", "--steps", "3"]) == 0
    assert load_checkpoint(run / "checkpoint")[1]["step"] == 3
    assert main(common + ["--set", "ngf=abc"]) == 2
    assert "ngf" in capsys.readouterr().err


def test_unknown_config_key_is_refused():
    from mammosynth.cli.train import resolve_train_config

    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_train_config("mask-dcgan", None, ["nonsense=1"], None, None)


# -- damaged or interrupted runs: one line naming the file, and no debris left ----------------
def _copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / run.name
    shutil.copytree(run, dst)
    return dst


def _resume_cli(store: Path, run: Path, capsys) -> tuple[int, list[str]]:
    from mammosynth.cli import main

    capsys.readouterr()
    rc = main(["train", "mask-dcgan", "--data", str(store), "--out", str(run.parent), "--resume", "--steps", "5", "--no-progress"])
    return rc, capsys.readouterr().err.strip().splitlines()


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_removes_temporary_folders_of_killed_checkpoint_writes(dcgan_run, store, tmp_path, capsys):
    import os

    run = _copy_run(dcgan_run, tmp_path)
    killed = run / f".checkpoint.tmp-{_dead_pid()}"  # what a SIGKILL inside save_checkpoint leaves
    shutil.copytree(run / "checkpoint", killed)
    own_pid = run / f".checkpoint.tmp-{os.getpid()}"  # a dead run's pid, reused by this process
    own_pid.mkdir()
    live = run / ".checkpoint.tmp-1"  # pid 1 is alive: a writer we must not disturb
    live.mkdir()
    assert _resume_cli(store, run, capsys)[0] == 0
    assert not killed.exists() and not own_pid.exists() and live.exists()
    assert load_checkpoint(run / "checkpoint")[1]["step"] == 5


_STATE_DAMAGE = {
    "step": lambda d: d.update(step="x"),
    "data_position": lambda d: d.update(data_position=[0, 0]),
    "data_position.epoch": lambda d: d["data_position"].update(epoch="a"),
    "rng": lambda d: d.update(rng=5),
    "rng[0]": lambda d: d.update(rng=["x"]),
    "rng[0].numpy": lambda d: d["rng"][0].update(numpy=[1, 2]),
    "rng[0].torch": lambda d: d["rng"][0].update(torch=["a"]),
    "rng[0] cannot be restored": lambda d: d["rng"][0].update(generator=[1, 2, 3]),
    "config": lambda d: d.update(config=[1]),
    "extra_state": lambda d: d.update(extra_state=[1]),
    "state.nets": lambda d: d["state"].update(nets=5),
    "state tree is malformed": lambda d: d["state"].update(x={"__tuple__": 3}),
    "optimizer 'G' group 0: lr": lambda d: d["state"]["optimizers"]["G"]["param_groups"][0].update(lr="x"),
    "should hold 'state' and 'param_groups'": lambda d: d["state"]["optimizers"]["G"].update(param_groups="x"),
}


@pytest.mark.parametrize("field", [*_STATE_DAMAGE, "expected a JSON object"])
def test_resume_with_a_damaged_state_json_is_one_line_naming_it(dcgan_run, store, tmp_path, capsys, field):
    run = _copy_run(dcgan_run, tmp_path)
    path = run / "checkpoint" / "state.json"
    doc = json.loads(path.read_text())
    if field in _STATE_DAMAGE:
        _STATE_DAMAGE[field](doc)
    else:
        doc = [doc]  # a list at the top level
    path.write_text(json.dumps(doc))
    rc, err = _resume_cli(store, run, capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"mammosynth: error: {path}: ") and field in err[0], err[0]


@pytest.mark.parametrize("field,damage", [("config", {"config": [1]}), ("data", {"data": [1]}),
                                          ("method_version", {"method_version": "x"}), ("method", {"method": 3})])
def test_resume_with_a_damaged_config_json_is_one_line_naming_it(dcgan_run, store, tmp_path, capsys, field, damage):
    run = _copy_run(dcgan_run, tmp_path)
    path = run / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    rc, err = _resume_cli(store, run, capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"mammosynth: error: {path}: {field} should be"), err[0]


def test_weights_with_nan_or_inf_are_refused_at_load(dcgan_run, tmp_path, capsys):
    from safetensors.torch import save_file

    from mammosynth.cli import main

    run = _copy_run(dcgan_run, tmp_path)
    weights = load_file(str(run / "model.safetensors"))
    key = next(k for k in weights if k.startswith("generator.") and weights[k].is_floating_point())
    weights[key][0] = float("nan")
    save_file(weights, str(run / "model.safetensors"), metadata={"format": "mammosynth-model", "method": "mask-dcgan",
                                                                  "method_version": "1"})
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: weights hold NaN or inf values \({re.escape(key)}\)"):
        load_method(run)
    capsys.readouterr()
    assert main(["generate", str(run), "--n", "2", "--out", str(tmp_path / "gen")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or inf" in err[0] and not (tmp_path / "gen").exists()
    # the training weights in the checkpoint are checked as well
    state_file = run / "checkpoint" / "state.safetensors"
    tensors = load_file(str(state_file))
    tkey = next(k for k in tensors if k.startswith("nets/generator/") and tensors[k].is_floating_point())
    tensors[tkey][...] = float("inf")
    save_file(tensors, str(state_file), metadata={"format": "mammosynth-checkpoint"})
    with pytest.raises(CheckpointError, match=r"state\.safetensors: weights hold NaN or inf"):
        load_method(run, ema=False)
