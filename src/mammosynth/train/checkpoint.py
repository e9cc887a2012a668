"""Resumable training state as safetensors + JSON: never pickled, and loading never unpickles.

A checkpoint is a folder holding two files:

- ``state.safetensors``: every tensor (networks, EMA copies, optimizer moments, ...), keyed by
  its path in the state tree, e.g. ``nets/generator/main.0.weight`` or
  ``optimizers/G/state/3/exp_avg``;
- ``state.json``: everything else (step, config, optimizer hyper-parameters, scaler scale,
  RNG states as integer lists, the data position, the method's ``extra_state()``), with
  ``{"__tensor__": key}`` where a tensor sat in the tree.

The folder is written atomically: the new state goes to a temporary sibling folder; only when
both files are complete and flushed is the previous checkpoint moved aside (``<name>.old``),
the new one renamed into place, and the old one deleted. A crash at any moment leaves either
the previous or the new checkpoint complete, and :func:`find_checkpoint` picks it up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mammosynth.errors import CheckpointError

TENSOR_FILE = "state.safetensors"
JSON_FILE = "state.json"
FORMAT = "mammosynth-checkpoint"
FORMAT_VERSION = 1

_TENSOR, _NDARRAY, _TUPLE, _DICT = "__tensor__", "__ndarray__", "__tuple__", "__dict__"


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """A JSON-able copy of ``obj`` with tensors moved into ``tensors`` (CPU, contiguous copies).

    Handles dicts (any hashable JSON-scalar keys), lists, tuples, tensors, numpy arrays and
    JSON scalars; raises TypeError on anything else (so nothing is ever silently pickled).
    """
    if isinstance(obj, torch.Tensor):
        key = path or "_"
        # a copy: views of one storage cannot be saved side by side
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        key = path or "_"
        # safetensors' torch side lacks some numpy dtypes (uint32): keep the dtype in JSON
        wide = obj.astype(np.int64) if obj.dtype.kind in "iub" else obj.astype(np.float64)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(wide)).clone()
        return {_NDARRAY: key, "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {_TUPLE: [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_tree(v, tensors, f"{path}/{k}" if path else k) for k, v in obj.items()}
        return {_DICT: [[k, encode_tree(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint (tensors and JSON only)")


def decode_tree(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(obj, dict):
        if _TENSOR in obj and len(obj) == 1:
            return tensors[obj[_TENSOR]]
        if _NDARRAY in obj:
            return tensors[obj[_NDARRAY]].numpy().astype(obj["dtype"])
        if _TUPLE in obj:
            return tuple(decode_tree(v, tensors) for v in obj[_TUPLE])
        if _DICT in obj:
            return {(tuple(k) if isinstance(k, list) else k): decode_tree(v, tensors) for k, v in obj[_DICT]}
        return {k: decode_tree(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    return obj


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` (a tree of tensors + JSON) and ``meta`` (JSON) to ``directory`` atomically."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f"{final.name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    tree = encode_tree(state, tensors)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "state": tree}
    save_file(tensors, str(tmp / TENSOR_FILE), metadata={"format": FORMAT})
    with open(tmp / JSON_FILE, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    with open(tmp / TENSOR_FILE, "rb") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    # keep the previous checkpoint until the new one is complete under its final name
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def _complete(directory: Path) -> bool:
    return (directory / TENSOR_FILE).is_file() and (directory / JSON_FILE).is_file()


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The complete checkpoint at ``directory``, or its ``.old`` twin left by a crash mid-swap."""
    final = Path(directory)
    if _complete(final):
        return final
    old = final.parent / f"{final.name}.old"
    if _complete(old):
        return old
    return None


def read_json_file(path: Path, missing: str) -> dict[str, Any]:
    """A JSON document; a CheckpointError naming ``path`` (with ``missing`` as the reason when
    the file is absent) when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {missing}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def read_checkpoint_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder (without touching the tensors)."""
    path = Path(directory) / JSON_FILE
    doc = read_json_file(path, "checkpoint file missing")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mammosynth checkpoint (format={doc.get('format')!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {doc.get('format_version')} is not supported "
            f"(this mammosynth reads version {FORMAT_VERSION})"
        )
    return doc


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state tree with tensors on CPU, meta) from a checkpoint folder. Never unpickles."""
    directory = Path(directory)
    doc = read_checkpoint_meta(directory)
    try:
        tensors = load_file(str(directory / TENSOR_FILE), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory / TENSOR_FILE}: cannot read checkpoint tensors ({err})") from err
    try:
        state = decode_tree(doc.pop("state"), tensors)
    except KeyError as err:
        raise CheckpointError(f"{directory / TENSOR_FILE}: tensor {err} listed in {JSON_FILE} is missing") from err
    return state, doc


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike, what: str) -> None:
    """``module.load_state_dict(state)`` with every mismatch reported as a CheckpointError that
    names ``source`` (the file), ``what`` (the network) and the offending keys/shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{source}: weights of {what!r} do not match the network ({'; '.join(parts)})")
    bad = [f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in network" for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(
            f"{source}: shape mismatch in {what!r}: {'; '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
            "(was the run trained with another config or patch size?)"
        )
    module.load_state_dict(state)
