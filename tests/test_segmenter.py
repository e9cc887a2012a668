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
