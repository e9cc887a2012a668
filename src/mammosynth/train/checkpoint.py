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
the previous or the new checkpoint complete, and :func:`find_checkpoint` picks it up; the
temporary folder of a write that was killed is removed when the run next starts
(:func:`clean_stale_checkpoint_tmp`).

Reading checks every field the trainer reads back (types, the RNG states, the optimizer
states against the optimizer they are loaded into), so a damaged ``state.json`` is one
CheckpointError naming the file and the field, never a traceback in the middle of resuming.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mammosynth.errors import CheckpointError
from mammosynth.io import fsync_dir, pid_alive

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
    fsync_dir(tmp)
    # keep the previous checkpoint until the new one is complete under its final name
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def clean_stale_checkpoint_tmp(directory: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.tmp-<pid>`` folders beside checkpoint ``directory`` that a killed
    :func:`save_checkpoint` left behind: those whose process is gone, or is this one (which is
    not writing while it starts). Called when a run resumes; returns what was removed."""
    final = Path(directory)
    if not final.parent.is_dir():
        return []
    removed = []
    for p in final.parent.iterdir():
        m = _TMP_NAME.match(p.name)
        if m is None or m["name"] != final.name or p.is_symlink() or not p.is_dir():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


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
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {_kind(doc)}")
    return doc


def _kind(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(doc: dict[str, Any], path: Path, fields: dict[str, tuple[bool, str, Any]], prefix: str = "") -> None:
    """``fields``: name -> (required, expected (words), test(value) -> bool). A CheckpointError
    naming ``path`` and the field for the first that is missing or fails its test."""
    for name, (required, expected, test) in fields.items():
        if name not in doc:
            if required:
                raise CheckpointError(f"{path}: no {prefix + name!r} entry")
            continue
        if not test(doc[name]):
            raise CheckpointError(f"{path}: {prefix}{name} should be {expected}, found {_kind(doc[name])}")


def _count(minimum: int):
    return lambda v: _is_int(v) and v >= minimum


#: What identifies a run in both config.json and state.json.
IDENTITY_FIELDS = {
    "method": (True, "a method name", lambda v: isinstance(v, str)),
    "method_version": (True, "an integer", _is_int),
    "config": (True, "a JSON object", lambda v: isinstance(v, dict)),
}
_META_FIELDS = {
    **IDENTITY_FIELDS,
    "step": (True, "an integer >= 0", _count(0)),
    "world_size": (False, "an integer >= 1", _count(1)),
    "data_position": (True, "a JSON object", lambda v: isinstance(v, dict)),
    "extra_state": (False, "a JSON object", lambda v: v is None or isinstance(v, dict)),
    "rng": (False, "a list (one RNG state per process)", lambda v: isinstance(v, list)),
    "state": (True, "a JSON object", lambda v: isinstance(v, dict)),
}
_POSITION_FIELDS = {k: (True, "an integer >= 0", _count(0)) for k in ("epoch", "epoch_pos", "batch_size")}


def check_rng_state(entry: Any, path: Path, where: str) -> None:
    """An RNG state as the trainer saves it (python, numpy, torch, generator[, cuda]); each
    part is tried on a scratch generator of its kind, so what passes here restores."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: {where} should be a JSON object, found {_kind(entry)}")
    for key in ("python", "numpy", "torch", "generator"):
        if key not in entry:
            raise CheckpointError(f"{path}: {where} has no {key!r} state")
    part = "python"
    try:
        version, internal, gauss = entry["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        part = "numpy"
        name, keys, pos, has_gauss, cached = entry["numpy"]
        np.random.RandomState().set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        part = "torch"
        torch.Generator().set_state(torch.tensor(entry["torch"], dtype=torch.uint8))
        part = "generator"  # CPU or CUDA: its size depends on the device, so only its bytes are checked here
        torch.tensor(entry["generator"], dtype=torch.uint8)
        part = "cuda"
        for s in entry.get("cuda") or []:
            torch.tensor(s, dtype=torch.uint8)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{path}: {where}.{part} is not a saved RNG state ({' '.join(str(err).split())[:120]})") from None


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
    check_fields(doc, path, _META_FIELDS)
    check_fields(doc["data_position"], path, _POSITION_FIELDS, prefix="data_position.")
    for i, entry in enumerate(doc.get("rng") or []):
        check_rng_state(entry, path, f"rng[{i}]")
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
    except (TypeError, ValueError, AttributeError) as err:  # a hand-edited tree: "__tuple__": 3, a bad dtype, ...
        raise CheckpointError(f"{directory / JSON_FILE}: the state tree is malformed ({err})") from err
    _check_state_tree(state, directory / JSON_FILE)
    return state, doc


def _check_state_tree(state: dict[str, Any], path: Path) -> None:
    """The trainer's layout: nets / ema hold {param: tensor} per network; optimizers / scalers
    hold one state dict each (checked in detail by :func:`load_optimizer_state`)."""
    for group in ("nets", "ema", "optimizers", "scalers"):
        if group not in state:
            continue
        nets = state[group]
        if not isinstance(nets, dict) or not all(isinstance(v, dict) for v in nets.values()):
            raise CheckpointError(f"{path}: state.{group} should map each name to a JSON object, found {_kind(nets)}")
        if group in ("nets", "ema"):
            for name, params in nets.items():
                bad = [k for k, v in params.items() if not isinstance(v, torch.Tensor)]
                if bad:
                    raise CheckpointError(f"{path}: state.{group}.{name}.{bad[0]} should be a tensor, found {_kind(params[bad[0]])}")


#: Optimizer-state tensors shaped like their parameter (Adam, AdamW, SGD with momentum).
_PARAM_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Any, source: str | os.PathLike, what: str) -> None:
    """``optimizer.load_state_dict(state)`` after checking that the saved hyper-parameters have
    the types of the optimizer's own and that moment tensors have their parameter's shape;
    a CheckpointError naming ``source`` and the optimizer otherwise (torch itself would accept
    ``lr: "x"`` and fail in the middle of the next step)."""
    own = optimizer.state_dict()
    groups, per_param = (state.get("param_groups"), state.get("state")) if isinstance(state, dict) else (None, None)
    if not isinstance(groups, list) or not isinstance(per_param, dict) or not all(isinstance(g, dict) for g in groups):
        raise CheckpointError(f"{source}: state of optimizer {what!r} should hold 'state' and 'param_groups', found {_kind(state)}")
    if len(groups) != len(own["param_groups"]):
        raise CheckpointError(f"{source}: optimizer {what!r} has {len(groups)} parameter group(s), this network needs "
                              f"{len(own['param_groups'])}")
    shapes: dict[Any, tuple[int, ...]] = {}
    for i, (saved, mine, live) in enumerate(zip(groups, own["param_groups"], optimizer.param_groups)):
        for key, value in mine.items():
            if key != "params" and key in saved and not _same_kind(saved[key], value):
                raise CheckpointError(f"{source}: optimizer {what!r} group {i}: {key} should be like {value!r}, "
                                      f"found {_kind(saved[key])}")
        ids = saved.get("params")
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            raise CheckpointError(f"{source}: optimizer {what!r} group {i} lists {_kind(ids)} parameters, "
                                  f"the network has {len(live['params'])}")
        shapes.update({pid: tuple(p.shape) for pid, p in zip(ids, live["params"]) if isinstance(pid, (int, str))})
    for pid, entry in per_param.items():
        if not isinstance(entry, dict):
            raise CheckpointError(f"{source}: optimizer {what!r} state of parameter {pid} should be a JSON object, found {_kind(entry)}")
        for key, value in entry.items():
            if not isinstance(value, (torch.Tensor, int, float)) or isinstance(value, bool):
                raise CheckpointError(f"{source}: optimizer {what!r} state {pid}.{key} should be a tensor or a number, "
                                      f"found {_kind(value)}")
            want = shapes.get(pid)
            if key in _PARAM_SHAPED and want is not None and isinstance(value, torch.Tensor) and tuple(value.shape) != want:
                raise CheckpointError(f"{source}: optimizer {what!r} state {pid}.{key} has shape {tuple(value.shape)}, "
                                      f"its parameter {want}")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{source}: state of optimizer {what!r} does not fit ({err})") from err


def _same_kind(saved: Any, own: Any) -> bool:
    """Whether a saved optimizer hyper-parameter can stand where the optimizer has ``own``."""
    number = lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)) or (  # noqa: E731
        isinstance(v, torch.Tensor) and v.numel() == 1)
    if isinstance(own, bool):
        return isinstance(saved, bool)
    if own is None:
        return saved is None or isinstance(saved, (bool, str))
    if number(own):
        return number(saved)
    if isinstance(own, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(own) and all(_same_kind(a, b) for a, b in zip(saved, own))
    return isinstance(saved, type(own))


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
