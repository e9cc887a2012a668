"""diffusion-infill: the MONAI-based Tri-label-conditioned diffusion inpainting method, on tiny
CPU inputs (a two-level UNet of widths 8 and 16, 16-32 px patches)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("monai")

from mammosynth.models.diffusion_infill import (  # noqa: E402
    N_LABEL_CLASSES, ConditionalDenoiser, DiffusionInfill, DiffusionInfillConfig, label_index,
)
from tests.blob_stores import blob_store  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=(8, 16), attention_levels=(False, False), num_res_blocks=1, norm_groups=8, num_head_channels=8,
            batch_size=4, sampler_steps=4, steps=2, ema_decay=0.0, sample_every=0, ckpt_every=2, log_every=1,
            device="cpu", amp="off", channels_last=False)


def _write_store(path: Path, n: int = 8, size: int = 32) -> Path:
    return blob_store(path, n, size)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _write_store(tmp_path_factory.mktemp("diffusion") / "blobs.h5")


def _method(size: int = 32, store: Path | None = None, **kw) -> DiffusionInfill:
    info = {"patch_size": size, **({"store_path": str(store)} if store else {})}
    return DiffusionInfill(DiffusionInfillConfig(**{**TINY, **kw}), info)


def _randomise(method: DiffusionInfill, seed: int = 0) -> DiffusionInfill:
    """MONAI zero-initialises the UNet's output conv (its output starts at 0 whatever the input):
    give every weight a small seeded random value so outputs depend on inputs and labels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.nets.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return method


def _patches(b: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tissue = torch.rand(b, 1, size, size, generator=g) * 0.6 - 0.3
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = (((yy - size / 2) / (size * 0.22)) ** 2 + ((xx - size / 2) / (size * 0.18)) ** 2 < 1).float()
    return tissue, mask.expand(b, 1, size, size).clone()


@pytest.mark.parametrize("fold, size", [(1, 16), (2, 32)])
def test_shapes(fold, size):
    m = _method(size, space_to_depth=fold)
    net = m.nets["unet"]
    x, cond = torch.randn(3, 1, size, size), torch.randn(3, 3, size, size)
    labels = label_index(torch.tensor([-1, 0, 3]), torch.tensor([-1, 4, 2]))
    assert labels.tolist()[0] == 0 and int(labels.max()) < N_LABEL_CLASSES
    out = net(x, cond, torch.tensor([0, 500, 999]), labels)
    assert out.shape == (3, 1, size, size)
    assert net.unet.conv_in.conv.in_channels == 4 * fold * fold
    tissue, mask = _patches(2, size)
    assert m.infill(tissue, mask, torch.Generator().manual_seed(0)).shape == (2, 1, size, size)
    # a window of another side is resized to the model's and back
    t2, m2 = _patches(1, 2 * size)
    assert m.infill(t2, m2, torch.Generator().manual_seed(0)).shape == (1, 1, 2 * size, 2 * size)


def test_bad_input_and_config_are_refused():
    from mammosynth.errors import ConfigError, DataError

    m = _method(16)
    with pytest.raises(DataError, match="shape"):
        m.infill(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 8))
    with pytest.raises(ConfigError, match="guidance"):
        m.infill(*_patches(1, 16), guidance_scale=-1.0)
    from mammosynth.config import from_dict

    with pytest.raises(ConfigError, match="norm_groups"):
        from_dict(DiffusionInfillConfig, {"channels": [8, 16], "attention_levels": [False, False], "norm_groups": 3})
    with pytest.raises(ConfigError, match="attention_levels"):
        from_dict(DiffusionInfillConfig, {"channels": [8, 16], "attention_levels": [False], "norm_groups": 8})
    with pytest.raises(ConfigError, match="divisible"):
        DiffusionInfill(DiffusionInfillConfig(**{**TINY, "channels": (8, 16, 16, 16), "attention_levels": (False,) * 4,
                                                 "space_to_depth": 4}), {"patch_size": 16})


def test_denoising_loss_falls_on_a_tiny_overfit():
    torch.manual_seed(0)
    m = _method(16)
    net = m.nets["unet"]
    tissue, mask = _patches(4, 16)
    x0 = (tissue + 0.5 * mask).clamp(-1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):  # the same noise and t every step: a fixed objective the net can fit
        loss, _ = m.loss(net, x0, mask, None, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses[::10]


class _Oracle(nn.Module):
    """The perfect denoiser for a known x0: from x_t and t it returns the exact v (or eps)."""

    def __init__(self, x0: torch.Tensor, acp: torch.Tensor, prediction: str) -> None:
        super().__init__()
        self.x0, self.acp, self.prediction = x0, acp, prediction
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x_t, cond, t, labels=None):
        a = self.acp[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0 if self.prediction == "v_prediction" else eps


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_scheduler_round_trip_with_an_oracle_returns_x0(prediction):
    m = _method(16, prediction=prediction, schedule="cosine")
    tissue, mask = _patches(2, 16)
    x0 = (tissue + 0.5 * mask).clamp(-0.95, 0.95)
    sched = m.train_scheduler()
    # one step: noise at t, read x0 back from the exact network output
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    for t in (10, 500, 900):
        tt = torch.full((2,), t)
        x_t = sched.add_noise(x0, noise, tt)
        out = m.target(sched, x0, noise, tt)
        ddim = m.sample_scheduler(10)
        _, x0_hat = ddim.step(out, t, x_t, eta=0.0)
        assert torch.allclose(x0_hat, x0, atol=1e-4)
    # the whole DDIM chain with context replacement returns x0 exactly where it is known, and x0 in the mask
    oracle = _Oracle(x0, m.sample_scheduler(8).alphas_cumprod.float(), prediction)
    for repaint in (0, 2):
        out = m.denoise(x0, mask, torch.Generator().manual_seed(3), net=oracle, steps=8, repaint=repaint)
        assert torch.allclose(out, x0, atol=1e-4)


def test_composite_is_bit_exact_outside_the_ring():
    from mammosynth.data.context import enlarge_mask

    m = _randomise(_method(32))
    tissue, mask = _patches(2, 32)
    out = m.infill(tissue, mask, torch.Generator().manual_seed(0))
    outside = ~(enlarge_mask(mask, m.cfg.margin_factor) | (mask > 0.5))
    assert torch.equal(out[outside], tissue[outside])
    assert not torch.equal(out[mask > 0.5], tissue[mask > 0.5])


def test_guidance_scale_zero_equals_the_unconditional_output():
    m = _randomise(_method(16))
    tissue, mask = _patches(2, 16)
    shape, margin = torch.tensor([0, 3]), torch.tensor([4, 1])

    def run(**kw):
        return m.infill(tissue, mask, torch.Generator().manual_seed(5), **kw)

    uncond = run()
    assert torch.equal(run(shape=shape, margin=margin, guidance_scale=0.0), uncond)
    # the labels do reach the network: conditional and guided samples differ from it and each other
    cond = run(shape=shape, margin=margin, guidance_scale=1.0)
    guided = run(shape=shape, margin=margin, guidance_scale=3.0)
    assert not torch.allclose(cond, uncond) and not torch.allclose(guided, cond)


def test_sampling_is_deterministic_per_seed(store):
    m = _randomise(_method(32, store=store))
    a = [s.image for s in m.generate(3, seed=11, batch_size=2)]
    b = [s.image for s in m.generate(3, seed=11, batch_size=2)]
    c = [s.image for s in m.generate(3, seed=12, batch_size=2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_generate_records_the_sampler_and_labels(store):
    m = _randomise(_method(32, store=store))
    samples = list(m.generate(2, seed=0, margin="circumscribed", sampler_steps=3, guidance_scale=2.0))
    assert len(samples) == 2
    for s in samples:
        assert s.image.shape == (32, 32) and s.image.dtype == np.float32 and 0 <= s.image.min() <= s.image.max() <= 1
        assert s.mask.any() and s.margin == "circumscribed" and s.shape in ("round", "oval")
        assert s.extra["sampler"] == "ddim" and s.extra["sampler_steps"] == 3 and s.extra["guidance_scale"] == 2.0


@pytest.fixture(scope="module")
def run(store, tmp_path_factory) -> Path:
    """A two-step training run through the one trainer (shared by the tests below)."""
    from mammosynth.train.trainer import Trainer

    out = tmp_path_factory.mktemp("diffusion-runs")
    return Trainer("diffusion-infill", store, out, DiffusionInfillConfig(**TINY), progress=False).run()


def test_save_load_round_trip(run):
    from mammosynth.train.run import load_method

    doc = json.loads((run / "config.json").read_text())
    assert doc["method"] == "diffusion-infill" and doc["config"]["prediction"] == "v_prediction"
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl"))
    loaded = load_method(run, device="cpu")
    again = load_method(run, device="cpu")
    for (k, a), (_, b) in zip(loaded.nets.state_dict().items(), again.nets.state_dict().items()):
        assert torch.equal(a, b), k
    tissue, mask = _patches(1, 32)
    x = loaded.infill(tissue, mask, torch.Generator().manual_seed(0))
    y = again.infill(tissue, mask, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    # the saved weights are the trained ones, not a fresh initialisation
    fresh = _method(32)
    assert any(not torch.equal(a, b) for a, b in zip(loaded.nets.state_dict().values(), fresh.nets.state_dict().values()))


class _Masks:
    """Stand-in for MaskDCGAN.sample_masks: a seeded ellipse in a 32x32 patch."""

    def sample_masks(self, n, seed):
        yy, xx = np.mgrid[:32, :32]
        a, b = np.random.default_rng(seed).uniform(7, 10, size=2)
        return (((yy - 16) / a) ** 2 + ((xx - 16) / b) ** 2 <= 1)[None]


def test_insert_with_a_diffusion_run_writes_coco_that_pycocotools_loads(run, tmp_path):
    import csv

    from pycocotools.coco import COCO

    from mammosynth.synth.insert import insert_lesions
    from mammosynth.train.run import load_method
    from tests.dicom_fixtures import synthetic_breast, write_png

    method = load_method(run, device="cpu")
    src = tmp_path / "in"
    img = synthetic_breast(240, 200, "L", seed=1)
    write_png(src / "a_L_CC.png", np.round(img * 4095).astype(np.uint16))
    out = tmp_path / "out"
    rep = insert_lesions(_Masks(), method, src, 2, out, seed=0, pixel_spacing=0.2, progress=False,
                         mask_run="masks", infill_run=str(run))
    assert rep.written == 2, rep.as_dict()
    coco = COCO(str(out / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(coco.getImgIds()) == 2 and len(anns) == 2
    assert all(coco.annToMask(a).sum() == a["area"] > 0 for a in anns)
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    extra = json.loads(rows[0]["extra"])
    assert extra["sampler"] == "ddim" and extra["sampler_steps"] == TINY["sampler_steps"]
    assert extra["guidance_scale"] == 1.0 and isinstance(extra["infill_seed"], int)
