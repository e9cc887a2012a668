"""Simulated readers, for demos and pipeline checks only (``study simulate``).

Each simulated reader follows the equal-variance Gaussian signal-detection model that d'
assumes: an image's internal "realness" is N(+d'/2, 1) if it is real and N(-d'/2, 1) if
synthetic; five criteria cut that axis into the six confidence levels (level 1 = extremely
confident real), and a realism score is drawn the same way with four criteria. A retest
showing re-draws with the same image effect plus fresh noise, so agreement is high but not
perfect. The answers go through the real API (FastAPI TestClient with the invitation
tokens from ``invitations.csv``), so a simulated study exercises the same code as a real one.

To keep simulated answers out of real studies: it refuses a study that already has any
answer, and it marks the study ``simulated`` in its metadata; the report says so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mammosynth.errors import DataError
from mammosynth.study import db
from mammosynth.study.create import INVITATIONS

#: Criteria on the realness axis between levels 6|5|4|3|2|1 (synthetic ... real).
LEVEL_CRITERIA = np.array([-1.5, -0.75, 0.0, 0.75, 1.5])
REALISM_CRITERIA = np.array([-1.2, -0.4, 0.4, 1.2])


def simulate_readers(study_dir: str | Path, d_prime: float = 1.0, seed: int = 0, image_effect_sd: float = 0.7) -> int:
    """Answer every showing of every reader; returns the number of answers posted.

    ``d_prime``: separation of real and synthetic on the realness axis (0 = cannot tell).
    ``image_effect_sd``: part of the noise that belongs to the image (shared by a reader's
    first and retest showing); the rest is fresh at every showing, so total variance is 1.
    """
    from fastapi.testclient import TestClient

    from mammosynth.study.server import create_app

    study = Path(study_dir)
    con, _ = db.open_study(study)
    try:
        if con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]:
            raise DataError(f"{study / db.DB_NAME}: the study already has answers; simulated readers only fill a fresh study")
        truth = {r["presentation_id"]: r["truth"] for r in con.execute(
            "SELECT p.presentation_id, i.truth FROM presentations p JOIN items i ON i.item_id = p.item_id")}
        item_of = dict(con.execute("SELECT presentation_id, item_id FROM presentations").fetchall())
        with db.transaction(con):
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('simulated', ?)",
                        (json.dumps({"d_prime": d_prime, "seed": seed}),))
    finally:
        con.close()
    inv_path = study / INVITATIONS
    if not inv_path.is_file():
        raise DataError(f"{inv_path}: missing; simulated readers need the invitation links")
    with open(inv_path, newline="") as fh:
        tokens = [row["link"].rsplit("/r/", 1)[1] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    fresh_sd = float(np.sqrt(max(0.0, 1.0 - image_effect_sd ** 2)))
    posted = 0
    with TestClient(create_app(study)) as client:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            image_effect: dict[str, float] = {}
            state = client.get("/api/state", headers=headers).json()
            while not state["done"]:
                pid = state["current"]["presentation_id"]
                item = item_of[pid]
                if item not in image_effect:
                    image_effect[item] = float(rng.normal(0.0, image_effect_sd))
                sign = 0.5 if truth[pid] == "real" else -0.5
                realness = sign * d_prime + image_effect[item] + rng.normal(0.0, fresh_sd)
                level = 6 - int(np.searchsorted(LEVEL_CRITERIA, realness))
                body = {"presentation_id": pid, "level": level, "elapsed_ms": int(rng.integers(1500, 9000))}
                if state["realism_score"]:
                    body["realism"] = 1 + int(np.searchsorted(REALISM_CRITERIA, realness + rng.normal(0.0, 0.5)))
                resp = client.post("/api/answers", headers=headers, json=body)
                if resp.status_code != 200:
                    raise DataError(f"{study}: the server refused a simulated answer ({resp.status_code}: {resp.text})")
                state = resp.json()
                posted += 1
    return posted
