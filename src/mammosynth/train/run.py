"""Run folders: numbered like stylegan2-ada, laid out like a Hugging Face model repo.

``--out DIR`` is a parent; each training run is ``DIR/00000-<method>/``, ``DIR/00001-<method>/``...::

    00003-mask-dcgan/
        config.json          {"method", "method_version", "mammosynth_version", "config", "data", "created"}
        model.safetensors    inference weights (EMA where it exists), keys "<netname>.<param>"
        checkpoint/          resumable state (state.safetensors + state.json, see checkpoint.py)
        samples/step_000200.png
        metrics.jsonl        one JSON object per log line
        events.out.tfevents* (only if TensorBoard is installed)

``config.json`` + ``model.safetensors`` at the top level means ``huggingface_hub.upload_folder``
publishes a run as is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mammosynth.config import from_dict
from mammosynth.errors import CheckpointError, ConfigError
from mammosynth.io import atomic_path
from mammosynth.train.checkpoint import (IDENTITY_FIELDS, check_fields, find_checkpoint, load_checkpoint, load_module_state,
                                         read_json_file)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoint"
SAMPLES_DIR = "samples"
METRICS_FILE = "metrics.jsonl"
_RUN_NAME = re.compile(r"^(\d{5,})-(.+)$")


def list_runs(parent: str | os.PathLike, method: str | None = None) -> list[Path]:
    """Numbered run folders directly under ``parent`` (optionally of one method), oldest first."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    runs = []
    for p in parent.iterdir():
        m = _RUN_NAME.match(p.name)
        if m and p.is_dir() and (method is None or m.group(2) == method):
            runs.append((int(m.group(1)), p))
    return [p for _, p in sorted(runs)]


def create_run_dir(out: str | os.PathLike, method: str) -> Path:
    """Create and return ``out/<NNNNN>-<method>/`` with the next free number."""
    parent = Path(out)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(m.group(1)) for p in parent.iterdir() if (m := _RUN_NAME.match(p.name))]
        run = parent / f"{max(numbers, default=-1) + 1:05d}-{method}"
        try:
            run.mkdir()
        except FileExistsError:  # another process took that number: try the next one
            continue
        return run


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def resolve_run(path: str | os.PathLike, method: str | None = None) -> Path:
    """A run folder itself, or a parent of numbered runs -> the latest one (of ``method`` if given)."""
    p = Path(path)
    if is_run_dir(p):
        return p
    if not p.exists():
        raise CheckpointError(f"{p}: no such run folder; train one with `mammosynth train METHOD --out {p}`")
    runs = [r for r in list_runs(p, method) if is_run_dir(r)]
    if not runs:
        what = f" of method {method!r}" if method else ""
        raise CheckpointError(
            f"{p}: not a run folder (no {CONFIG_FILE}) and holds no numbered runs{what} "
            "(NNNNN-<method>/ written by `mammosynth train`)"
        )
    return runs[-1]


def read_run_config(run: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a run folder as a dict (a CheckpointError names the file otherwise)."""
    path = Path(run) / CONFIG_FILE
    doc = read_json_file(path, f"missing; {Path(run)} is not a run folder written by `mammosynth train`")
    for key in ("method", "method_version", "config"):
        if key not in doc:
            raise CheckpointError(f"{path}: no {key!r} entry; not a mammosynth run config")
    check_fields(doc, path, _RUN_CONFIG_FIELDS)
    return doc


_RUN_CONFIG_FIELDS = {**IDENTITY_FIELDS, "data": (False, "a JSON object", lambda v: v is None or isinstance(v, dict))}


def check_finite_weights(tensors: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Refuse weights holding NaN or inf (a diverged or damaged run would write all-zero
    images with empty boxes), naming the file and the first bad tensors."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{source}: weights hold NaN or inf values ({', '.join(bad[:3])}{more}); the run diverged "
                              "or the file is damaged: resume from an earlier checkpoint or retrain")


def check_method_matches(doc: dict[str, Any], source: str | os.PathLike, method_cls: type, expect: str | None = None) -> None:
    """Refuse a run/checkpoint of another method or another state-dict version of the method."""
    if expect is not None and doc.get("method") != expect:
        raise CheckpointError(f"{source}: holds a {doc.get('method')!r} run, but a {expect!r} run was asked for")
    if doc.get("method") != method_cls.name:
        raise CheckpointError(f"{source}: holds a {doc.get('method')!r} run, not {method_cls.name!r}")
    if int(doc.get("method_version", -1)) != int(method_cls.version):
        raise CheckpointError(
            f"{source}: {method_cls.name!r} version {doc.get('method_version')} does not match this "
            f"mammosynth's version {method_cls.version} of that method (state-dict layout changed); retrain"
        )


def save_inference_weights(path: str | os.PathLike, nets: dict[str, torch.nn.Module], method: str, version: int) -> None:
    """``model.safetensors`` with keys ``<netname>.<param>`` (buffers included), atomically."""
    tensors = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    meta = {"format": "mammosynth-model", "method": method, "method_version": str(version)}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def split_weights(tensors: dict[str, torch.Tensor], names: list[str], source: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """``{"generator.a.b": t}`` -> ``{"generator": {"a.b": t}}`` (unknown networks are an error)."""
    out: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    for key, value in tensors.items():
        net, _, param = key.partition(".")
        if net not in out:
            raise CheckpointError(f"{source}: weights for unknown network {net!r} (this method has {', '.join(names)})")
        out[net][param] = value
    return out


def load_method(run: str | os.PathLike, device: str | torch.device = "auto", ema: bool = True, expect: str | None = None):
    """Rebuild a trained method from a run folder for inference.

    ``ema=True`` loads ``model.safetensors`` (EMA weights where the method keeps them);
    ``ema=False`` loads the raw training networks from ``checkpoint/``. ``expect`` names the
    method the caller needs (e.g. "mask-dcgan"). Returns the Method with nets on ``device``
    in eval mode. Any mismatch (method, version, shapes) is a CheckpointError naming the file.
    """
    from mammosynth.models import get_method
    from mammosynth.train.distributed import resolve_device

    run = resolve_run(run, expect)
    doc = read_run_config(run)
    cfg_path = run / CONFIG_FILE
    if expect is not None and doc["method"] != expect:
        raise CheckpointError(f"{cfg_path}: holds a {doc['method']!r} run, but a {expect!r} run was asked for")
    try:
        method_cls = get_method(doc["method"])
    except ConfigError as err:
        raise CheckpointError(f"{cfg_path}: {err}") from err
    check_method_matches(doc, cfg_path, method_cls, expect)
    try:
        cfg = from_dict(method_cls.Config, method_cls.Config.from_saved(doc["config"]))
    except ConfigError as err:
        raise CheckpointError(f"{cfg_path}: the saved config does not fit this version of {method_cls.name!r} ({err})") from err
    method = method_cls(cfg, doc.get("data") or {})
    names = list(method.nets.keys())
    if ema:
        wpath = run / WEIGHTS_FILE
        if not wpath.is_file():
            raise CheckpointError(f"{wpath}: missing; the run has not finished a checkpoint yet")
        try:
            with safe_open(str(wpath), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(wpath), device="cpu")
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{wpath}: cannot read weights ({err})") from err
        if meta.get("method") not in (None, doc["method"]):
            raise CheckpointError(f"{wpath}: weights of method {meta.get('method')!r}, but {cfg_path} says {doc['method']!r}")
        if meta.get("method_version") not in (None, str(method_cls.version)):
            raise CheckpointError(
                f"{wpath}: weights of {doc['method']!r} version {meta.get('method_version')}, this mammosynth has version {method_cls.version}"
            )
        check_finite_weights(tensors, wpath)
        per_net = split_weights(tensors, names, wpath)
        source = wpath
    else:
        ckpt = find_checkpoint(run / CHECKPOINT_DIR)
        if ckpt is None:
            raise CheckpointError(f"{run / CHECKPOINT_DIR}: no complete checkpoint to load training weights from")
        state, meta = load_checkpoint(ckpt)
        check_method_matches(meta, ckpt, method_cls, expect)
        per_net = state.get("nets") or {}
        check_finite_weights({f"{n}.{k}": t for n, params in per_net.items() for k, t in params.items()}, ckpt / "state.safetensors")
        source = ckpt
    for name in names:
        load_module_state(method.nets[name], per_net.get(name, {}), source, name)
    method.nets.to(resolve_device(str(device)) if not isinstance(device, torch.device) else device)
    method.run_dir = run
    method.on_load()
    return method
