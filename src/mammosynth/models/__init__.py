"""One file per method. The registry maps CLI names to ``module:Class`` (imported lazily)."""

from __future__ import annotations

import importlib

from mammosynth.errors import ConfigError

METHODS: dict[str, str] = {
    "mask-dcgan": "mammosynth.models.mask_dcgan:MaskDCGAN",
    "infill": "mammosynth.models.infill:InfillGAN",
    "diffusion-infill": "mammosynth.models.diffusion_infill:DiffusionInfill",
    "birads-aegan": "mammosynth.models.birads_aegan:BiradsAEGAN",
    "lesion-dcgan": "mammosynth.models.lesion_dcgan:LesionDCGAN",
    "mask-embedding": "mammosynth.models.mask_embedding:MaskEmbeddingGAN",
    "stylegan": "mammosynth.models.stylegan:StyleGAN",
    "stylegan-encoder": "mammosynth.models.stylegan_encoder:StyleGANEncoder",
    "classifier": "mammosynth.models.classifier:BiradsClassifier",
    "segmenter": "mammosynth.models.segmenter:Segmenter",
}


def get_method(name: str):
    """The Method class registered under ``name`` (raises ConfigError listing valid names)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            raise ConfigError(f"method {name!r} is not available in this version of mammosynth") from err
        raise
    return getattr(mod, cls)
