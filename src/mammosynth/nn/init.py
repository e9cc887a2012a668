"""Weight initialisations shared by the GANs."""

from __future__ import annotations

from torch import nn


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): conv / transposed conv / linear weights N(0, 0.02),
    BatchNorm scale N(1, 0.02), biases 0. Use as ``net.apply(dcgan_init)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def he_init(module: nn.Module, slope: float = 0.2) -> None:
    """He initialisation for leaky-ReLU networks (He et al. 2015): conv / transposed conv /
    linear weights N(0, 2 / ((1 + slope^2) fan_in)), biases 0, so every layer keeps the signal's
    scale. PyTorch's default (uniform, gain 1/sqrt(3)) shrinks it about 2x per layer: a dozen-layer
    critic then starts with an input gradient of ~1e-6 and WGAN-GP's penalty (||grad|| - 1)^2 sits
    at 1 with nothing to climb. Use as ``net.apply(he_init)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
