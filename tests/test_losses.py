import torch
from torch import nn

from mammosynth.losses import d_loss_bce, g_loss_bce, gradient_penalty, masked_cross_entropy, r1_penalty


class _Critic(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_bce_losses_match_definition():
    r, f = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    ref = -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean())
    assert torch.allclose(d_loss_bce(r, f), ref, atol=1e-6)
    assert torch.allclose(g_loss_bce(f), -torch.sigmoid(f).log().mean(), atol=1e-6)


def test_gradient_penalty_of_linear_critic_is_exact():
    c = _Critic()
    real, fake = torch.randn(4, 8), torch.randn(4, 8)
    gp = gradient_penalty(c, real, fake)
    expected = (c.lin.weight.norm() - 1) ** 2
    assert torch.allclose(gp, expected, atol=1e-5)
    gp.backward()
    assert c.lin.weight.grad is not None and torch.isfinite(c.lin.weight.grad).all()


def test_r1_of_linear_disc_is_weight_norm_squared():
    c = _Critic()
    r1 = r1_penalty(c, torch.randn(3, 8))
    assert torch.allclose(r1, c.lin.weight.pow(2).sum(), atol=1e-5)
    r1.backward()
    assert c.lin.weight.grad.abs().sum() > 0


def test_masked_cross_entropy_ignores_unknown():
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.tensor([0, -1, 2, -1])
    loss = masked_cross_entropy(logits, target)
    ref = torch.nn.functional.cross_entropy(logits[[0, 2]], target[[0, 2]])
    assert torch.allclose(loss, ref)
    none = masked_cross_entropy(logits, torch.full((4,), -1))
    none.backward()
    assert none.item() == 0.0
