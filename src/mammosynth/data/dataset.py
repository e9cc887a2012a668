"""torch Datasets over a store file, with the seed-001 augmentation (flips, random crops).

h5py handles are not fork-safe, so each DataLoader worker opens the file lazily on first
use. Images are returned as (1, S, S) float32 in [-1, 1]; masks as (1, S, S) float32 in {0, 1}.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mammosynth.data.birads import LESION_TYPES
from mammosynth.data.store import Store
from mammosynth.errors import ConfigError


#: Lesion sets smaller than this are read into memory once per process (the HDF5 read and
#: gzip decode cost ~3 ms per patch, more than the whole augmentation).
IN_MEMORY_BYTES = 512 * 2**20


class _H5Dataset(Dataset):
    group = "lesions"

    def __init__(self, store_path: str | os.PathLike, split: str | None = "train") -> None:
        self.store_path = str(store_path)
        with Store(self.store_path) as s:  # validates the file and reads the index once
            self.indices = s.split_indices(self.group, split)
            self.patch_size = s.patch_size
            self.normal_size = tuple(s.manifest.get("normal_size") or (0, 0))
        self.split = split
        self._h5: h5py.File | None = None
        self._pid = -1

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.store_path, "r")
            self._pid = os.getpid()
        return self._h5

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        return state


def random_crop_resize(tensors: list[torch.Tensor], scale: tuple[float, float], modes: list[str]) -> list[torch.Tensor]:
    """Crop the same random square (side in ``scale`` x S) from each (C,S,S) tensor, resize back to S."""
    S = tensors[0].shape[-1]
    frac = float(torch.empty(()).uniform_(scale[0], scale[1]))
    side = max(2, int(round(S * frac)))
    if side >= S:
        return tensors
    y0 = int(torch.randint(0, S - side + 1, ()))
    x0 = int(torch.randint(0, S - side + 1, ()))
    out = []
    for t, mode in zip(tensors, modes):
        crop = t[:, y0:y0 + side, x0:x0 + side].unsqueeze(0)
        kw = {"align_corners": False} if mode == "bilinear" else {}
        out.append(F.interpolate(crop, size=(S, S), mode=mode, **kw).squeeze(0))
    return out


class LesionDataset(_H5Dataset):
    """Lesion patches with masks and labels from a store.

    Returns a dict: ``image`` (1,S,S) [-1,1]; ``mask`` (1,S,S) {0,1}; ``shape``, ``margin``,
    ``pathology``, ``morphology``, ``distribution`` (int64, -1 = unknown: mask these out of
    auxiliary losses); ``lesion_type`` (int64 index into birads.LESION_TYPES); ``index``.
    ``size`` resizes patches to another side (e.g. 128 from a 256 store). ``lesion_types``
    keeps only lesions of those types (e.g. ``("calcification",)``; None = all).
    """

    #: Per-lesion integer label columns, read once at construction (stores before format 3
    #: imply morphology/distribution -1 and the lesion type from the shape status).
    LABELS = ("shape", "margin", "pathology", "morphology", "distribution", "lesion_type")

    group = "lesions"

    def __init__(
        self,
        store_path: str | os.PathLike,
        split: str | None = "train",
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.85, 1.0),
        size: int | None = None,
        lesion_types: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(store_path, split)
        with Store(self.store_path) as s:
            cols = {name: s.label_codes(name) for name in self.LABELS}
        types = np.asarray(LESION_TYPES)[cols["lesion_type"]]
        if lesion_types is not None:
            bad = [t for t in lesion_types if t not in LESION_TYPES]
            if bad:
                raise ConfigError(f"unknown lesion type {bad[0]!r}; choose among: {', '.join(LESION_TYPES)}")
            self.indices = self.indices[np.isin(types[self.indices], list(lesion_types))]
        self._labels = {name: cols[name][self.indices] for name in self.LABELS}
        self.lesion_types = lesion_types
        self.augment = augment
        self.crop_scale = crop_scale
        self.size = size
        self._cache: dict[str, np.ndarray] | None = None
        self.in_memory = len(self.indices) * self.patch_size**2 * 3 < IN_MEMORY_BYTES

    def _arrays(self) -> dict[str, np.ndarray] | None:
        """All of this split's lesions as arrays (read once per process), or None if too large."""
        if not self.in_memory:
            return None
        if self._cache is None:
            g = self._file()["lesions"]
            idx = np.asarray(self.indices)
            self._cache = {k: g[k][...][idx] if len(idx) else g[k][:0] for k in ("patch", "mask")}
        return self._cache

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = None
        return state

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        cache = self._arrays()
        g = cache if cache is not None else self._file()["lesions"]
        k = i if cache is not None else j
        image = torch.from_numpy(g["patch"][k].astype(np.float32) / 65535.0).unsqueeze(0)
        mask = torch.from_numpy(g["mask"][k].astype(np.float32)).unsqueeze(0)
        if self.size is not None and self.size != image.shape[-1]:
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)[0]
            mask = (F.interpolate(mask[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0] >= 0.5).float()
        if self.augment:
            if torch.rand(()) < 0.5:
                image, mask = image.flip(-1), mask.flip(-1)
            if torch.rand(()) < 0.5:
                image, mask = image.flip(-2), mask.flip(-2)
            image, mask = random_crop_resize([image, mask], self.crop_scale, ["bilinear", "nearest"])
        return {
            "image": image * 2.0 - 1.0,
            "mask": mask,
            **{name: torch.tensor(int(col[i]), dtype=torch.int64) for name, col in self._labels.items()},
            "index": torch.tensor(j, dtype=torch.int64),
        }


class NormalDataset(_H5Dataset):
    """Normal mammograms (left-oriented canvas) with breast masks, optionally resized to (h, w).

    Returns ``image`` (1,H,W) [-1,1], ``breast_mask`` (1,H,W) {0,1}, ``index``.
    """

    group = "normals"

    def __init__(self, store_path: str | os.PathLike, split: str | None = "train", size: tuple[int, int] | None = None, augment: bool = False) -> None:
        super().__init__(store_path, split)
        self.size = size
        self.augment = augment

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        h5 = self._file()
        j = int(self.indices[i])
        g = h5["normals"]
        image = torch.from_numpy(g["image"][j].astype(np.float32) / 65535.0).unsqueeze(0)
        bmask = torch.from_numpy(g["breast_mask"][j].astype(np.float32)).unsqueeze(0)
        if self.size is not None and tuple(self.size) != tuple(image.shape[-2:]):
            image = F.interpolate(image[None], size=tuple(self.size), mode="bilinear", antialias=True, align_corners=False)[0]
            bmask = (F.interpolate(bmask[None], size=tuple(self.size), mode="bilinear", align_corners=False)[0] >= 0.5).float()
        if self.augment and torch.rand(()) < 0.5:
            image, bmask = image.flip(-2), bmask.flip(-2)  # vertical only: chest wall stays at x = 0
        return {"image": image * 2.0 - 1.0, "breast_mask": bmask, "index": torch.tensor(j, dtype=torch.int64)}


def fixed_lesion_items(data_info: dict, size: int, n: int) -> list[dict] | None:
    """The first ``n`` lesion items (cycled) of a run's store for its sample grids: validation
    patches, else train, else any; at the model's ``size`` when it differs from the store's.
    None when the run records no store or the store has no lesions."""
    path = data_info.get("store_path") or data_info.get("path")
    if not path:
        return None
    size_arg = size if size != data_info.get("patch_size") else None
    for split in ("val", "train", None):
        ds = LesionDataset(path, split=split, augment=False, size=size_arg)
        if len(ds):
            return [ds[i % len(ds)] for i in range(n)]
    return None
