"""Which real lesions a synthetic set, its generator and a judge have seen.

No reported number may compare a model with data it learned from: a synthetic lesion made
from a test lesion (its manifest ``source_ids``) flatters every distance to the test split,
and a label-fidelity judge trained on the generator's seeds recognises them. These helpers
trace the lesions by ``source_id`` (the store column every reader fills), across stores, so a
re-ingested copy of the same data is caught too.

* :func:`synthetic_sources`: source id -> manifest rows that used it;
* :func:`split_source_ids`: the source ids of some splits of a store;
* :func:`run_training_lesions`: the store and split a training run learned from (its
  ``config.json``), and their source ids;
* :func:`evaluation_leakage`: synthetic images made from lesions of the evaluation splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

#: How many example ids or files a report lists (the counts are always complete).
N_EXAMPLES = 10


def synthetic_sources(rows: list[dict[str, str]]) -> dict[str, list[int]]:
    """Source id -> indices of the manifest rows whose ``source_ids`` (``;``-separated) name it."""
    out: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for sid in (row.get("source_ids") or "").split(";"):
            if sid.strip():
                out.setdefault(sid.strip(), []).append(i)
    return out


def split_source_ids(store: str | Path, splits: Iterable[str]) -> dict[str, str]:
    """{source id: split} for the lesions of ``splits`` of the store at ``store``."""
    from mammosynth.data.store import Store

    out: dict[str, str] = {}
    with Store(store) as st:
        ids = st.h5["lesions/source_id"].asstr()[...]
        for split in splits:
            for i in st.split_indices("lesions", split):
                out[str(ids[i])] = split
    return out


def run_training_lesions(run: str | Path) -> dict[str, Any]:
    """What a training run learned from, read from its ``config.json``:
    ``{"run", "store", "split", "ids": set}``, or ``{"run", "unknown": why}`` when the run folder
    or its store cannot be read. The trainer feeds every method the ``train`` split, except a
    ``classifier`` whose ``train_split`` says otherwise."""
    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        return {"run": str(run), "unknown": f"{cfg_path} not found"}
    try:
        doc = json.loads(cfg_path.read_text())
        data = doc.get("data") or {}
        store = data.get("store_path") or data.get("path")
        split = data.get("train_split") or (doc.get("config") or {}).get("train_split") or "train"
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        return {"run": str(run), "unknown": f"{cfg_path}: unreadable ({err})"}
    if not store or not Path(store).is_file():
        return {"run": str(run), "unknown": f"its training store {store!r} is not on this machine"}
    return {"run": str(run), "store": str(store), "split": split, "ids": set(split_source_ids(store, [split]))}


def examples(items: Iterable[Any]) -> list[Any]:
    """The first :data:`N_EXAMPLES` of ``items``, sorted (what a report lists; counts are separate)."""
    return sorted(items)[:N_EXAMPLES]


def evaluation_leakage(rows: list[dict[str, str]], real_store: str | Path, splits: tuple[str, ...]) -> dict[str, Any]:
    """Synthetic images (manifest rows) made from lesions of ``splits`` of ``real_store``.

    Returns ``{"splits", "n_images", "n_with_source_ids", "n_leaked", "leaked_source_ids",
    "leaked_files"}`` (the lists are examples, at most :data:`N_EXAMPLES`)."""
    sources = synthetic_sources(rows)
    held = split_source_ids(real_store, splits)
    leaked_ids = sorted(set(sources) & set(held))
    leaked_rows = sorted({i for sid in leaked_ids for i in sources[sid]})
    return {"splits": list(splits), "n_images": len(rows),
            "n_with_source_ids": sum(1 for r in rows if (r.get("source_ids") or "").strip()),
            "n_leaked": len(leaked_rows), "n_leaked_source_ids": len(leaked_ids),
            "leaked_source_ids": examples(leaked_ids),
            "leaked_files": [rows[i].get("file", "") for i in leaked_rows[:N_EXAMPLES]]}
