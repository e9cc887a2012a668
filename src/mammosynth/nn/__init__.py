"""Shared network building blocks and pretrained feature networks (plain torch, no torchvision).

- :mod:`mammosynth.nn.weights`: the local safetensors weight cache (`mammosynth weights get`).
- :mod:`mammosynth.nn.vgg`: VGG16/VGG19 trunks (perceptual loss, LPIPS, FD-VGG16).
- :mod:`mammosynth.nn.alexnet`: AlexNet trunk (LPIPS-Alex).
- :mod:`mammosynth.nn.efficientnet`: EfficientNet-Lite0 (FD-EffNet).
- :mod:`mammosynth.nn.inception`: FID InceptionV3 (only with the user's pt_inception weights).

Sub-modules are imported on demand so ``import mammosynth.nn`` stays cheap.
"""
