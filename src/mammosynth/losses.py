"""Losses shared by the methods. Discriminators output logits (never BCE after a sigmoid).

Method-specific terms that only one paper uses live in that method's file; what two or more
methods need lives here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side of the original GAN objective (seed 001 eq. 2-3), on logits:
    -log D(x) - log(1 - D(G(z)))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_bce(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log D(G(z)) (Goodfellow et al.'s practical form)."""
    return F.softplus(-fake_logits).mean()


def d_loss_wgan(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss of WGAN: E[D(G(z))] - E[D(x)]."""
    return fake_scores.mean() - real_scores.mean()


def g_loss_wgan(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *cond: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random
    interpolates x_hat between real and fake. ``cond`` tensors are passed to the critic unchanged.
    Multiply by lambda (10 in the paper) at the call site."""
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat, *cond)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(disc, real: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
    """R1 regulariser (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real data.
    Multiply by gamma/2 at the call site (gamma = 10 in seed 004)."""
    x = real.detach().requires_grad_(True)
    scores = disc(x, *cond)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Cross-entropy over samples whose label is known; labels equal to ``ignore_index``
    (missing in the dataset) are masked out, not guessed. Returns 0 (with grad) if none known."""
    known = target != ignore_index
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], target[known])
