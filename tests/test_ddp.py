"""Data-parallel training under torchrun: 2 CPU processes (gloo).

The test launches this file as a torchrun script; each rank trains and dumps its in-memory
weights. Both ranks must end bit-identical, and a 2 x 2 run must equal a 1 x 4 run (same global
batch, mean loss, SGD) up to float summation order, which shows gradients are averaged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mammosynth.models.mask_dcgan import MaskDCGANConfig
from mammosynth.train.trainer import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import TinyConfig, TinyRegression, make_store  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")



def _dump(trainer: Trainer, path: Path) -> None:
    tensors = {f"{n}.{k}": v.detach().clone().contiguous() for n, net in trainer.nets.items() for k, v in net.state_dict().items()}
    tensors.update({f"ema.{n}.{k}": v.detach().clone().contiguous() for n, net in trainer.ema.items() for k, v in net.state_dict().items()})
    save_file(tensors, str(path))


def _regression_cfg(batch_size: int) -> TinyConfig:
    return TinyConfig(steps=3, batch_size=batch_size, lr=0.5, device="cpu", log_every=1, sample_every=0, ckpt_every=0)


def _worker(store: Path, out: Path) -> None:
    rank = int(os.environ["RANK"])
    t = Trainer(TinyRegression, store, out / "regression", _regression_cfg(2), progress=False)
    t.run()
    _dump(t, out / f"regression_rank{rank}.safetensors")
    cfg = MaskDCGANConfig(steps=2, batch_size=2, nz=8, ngf=4, ndf=4, device="cpu", sample_every=2, ckpt_every=2, log_every=1)
    t = Trainer("mask-dcgan", store, out / "dcgan", cfg, progress=False)
    t.run()
    _dump(t, out / f"dcgan_rank{rank}.safetensors")


def test_two_processes_average_gradients(tmp_path):
    store = make_store(tmp_path / "s.h5", n=16, size=32)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(store), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name in ("regression", "dcgan"):
        r0 = load_file(str(tmp_path / f"{name}_rank0.safetensors"))
        r1 = load_file(str(tmp_path / f"{name}_rank1.safetensors"))
        assert r0.keys() == r1.keys()
        for k in r0:  # parameters, EMA and BatchNorm buffers identical on both ranks
            assert torch.equal(r0[k], r1[k]), (name, k)
    run = tmp_path / "dcgan" / "00000-mask-dcgan"
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert (run / "checkpoint" / "state.safetensors").is_file()
    assert not (tmp_path / "dcgan" / "00001-mask-dcgan").exists()  # only rank 0 writes

    single = Trainer(TinyRegression, store, tmp_path / "single", _regression_cfg(4), progress=False)
    single.run()
    ddp = load_file(str(tmp_path / "regression_rank0.safetensors"))
    seed_everything(0)  # as the trainer does before building
    start = TinyRegression(_regression_cfg(4), {}).nets["model"].state_dict()
    for k, v in single.nets["model"].state_dict().items():
        assert torch.allclose(v, ddp[f"model.{k}"], atol=1e-6, rtol=1e-5), k
        assert not torch.allclose(v, start[k]), k  # training moved the weight


if __name__ == "__main__":  # a torchrun worker
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
