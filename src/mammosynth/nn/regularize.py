"""Discriminator regularisation shared by the GANs.

``spectral_normalize`` wraps every convolution and linear layer of a module in spectral
normalisation (Miyato et al. 2018): each weight is divided by its largest singular value
(one power iteration per forward pass), bounding the discriminator's Lipschitz constant so its
gradients stay informative and it cannot run away from the generator on a few hundred images.
The R1 gradient penalty (Mescheder et al. 2018) is :func:`mammosynth.losses.r1_penalty`.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Apply spectral normalisation to every Conv2d / ConvTranspose2d / Linear weight of
    ``module`` in place; returns the module."""
    for sub in list(module.modules()):
        if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not hasattr(sub, "parametrizations"):
            spectral_norm(sub)
    return module
