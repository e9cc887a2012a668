import numpy as np
import pytest
import torch

from mammosynth.models.segmenter import UNet, dice_coefficient, soft_dice_loss


@pytest.mark.parametrize("size,depth", [(32, 3), (64, 4)])
def test_unet_shapes_and_gradients(size, depth):
    net = UNet(width=4, depth=depth)
    x = torch.randn(2, 1, size, size, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 1, size, size)
    y.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, size + 4, size))


def test_unet_overfits_a_tiny_batch():
    torch.manual_seed(0)
    net = UNet(width=4, depth=2)
    x = torch.randn(4, 1, 16, 16)
    m = torch.zeros(4, 1, 16, 16)
    m[:, :, 4:12, 4:12] = 1
    x = x * 0.2 + m  # the lesion is brighter
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(60):
        logits = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, m) + soft_dice_loss(logits, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dice():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    assert dice_coefficient(a, a) == 1.0
    assert dice_coefficient(a, ~a) == 0.0
    assert dice_coefficient(np.zeros_like(a), np.zeros_like(a)) == 1.0
    b = np.zeros_like(a)
    b[:10, :5] = True
    assert dice_coefficient(a, b) == pytest.approx(2 * 25 / 100)


def test_normal_tiles_are_centred_in_the_breast_and_deterministic(tmp_path):
    from test_evaluate_run import make_tiny_store

    from mammosynth.errors import ConfigError
    from mammosynth.models.segmenter import NormalTiles

    store = make_tiny_store(tmp_path / "s.h5", n_train=4, n_test=2)
    tiles = NormalTiles(str(store), "train", 32, 12, seed=0)
    again = NormalTiles(str(store), "train", 32, 12, seed=0)
    assert len(tiles) == 12
    for i in range(12):
        t = tiles[i]
        assert t["image"].shape == (1, 32, 32) and t["mask"].sum() == 0
        assert t["image"].min() >= -1 and t["image"].max() <= 1
        assert t["image"][0, 14:18, 14:18].gt(-1).all()  # the centre is breast tissue, not background
        assert torch.equal(t["image"], again[i]["image"])
    with pytest.raises(ConfigError, match="no normal mammograms"):
        NormalTiles(str(store), "val", 32, 4)


def test_segmenter_configs_train_and_reload(tmp_path):
    from test_evaluate_run import make_tiny_store

    from mammosynth.config import default_config_path, load_config
    from mammosynth.models.segmenter import SegmenterConfig
    from mammosynth.train.run import load_method
    from mammosynth.train.trainer import train

    for size in ("demo", "full"):
        load_config(SegmenterConfig, default_config_path("segmenter", size), []).validate()
    store = make_tiny_store(tmp_path / "s.h5", n_train=8, n_test=2)
    cfg = load_config(SegmenterConfig, default_config_path("segmenter", "demo"),
                      ["steps=2", "batch_size=4", "device=cpu", "ckpt_every=2"])
    run = train("segmenter", store, tmp_path / "runs", cfg, progress=False)
    seg = load_method(run, device="cpu", expect="segmenter")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    p = seg.predict(x)
    assert p.shape == (3, 1, 32, 32) and 0 <= p.min() and p.max() <= 1
    assert torch.equal(p, load_method(run, device="cpu").predict(x))  # reload gives the same network
