"""Reader-study API (FastAPI TestClient): reader flow, resume, 409 on re-answer, security
(tokens, isolation between readers, path traversal, validation), and a demo study that is
answered through the API and analysed."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mammosynth.study import db, stats
from mammosynth.study.analyze import analyze_study
from mammosynth.study.server import create_app
from test_study_create import make_study, token_of


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def presentations(study: Path, reader: str) -> list[sqlite3.Row]:
    con = sqlite3.connect(study / db.DB_NAME)
    con.row_factory = sqlite3.Row
    rows = con.execute(
        "SELECT p.*, i.truth FROM presentations p JOIN readers r ON r.reader_id = p.reader_id "
        "JOIN items i ON i.item_id = p.item_id WHERE r.name = ? ORDER BY p.position", (reader,)).fetchall()
    con.close()
    return rows


@pytest.fixture
def study(tmp_path):
    made = make_study(tmp_path, readers=2, n_per_class=2, retest=1)
    return made.path, [token_of(i.link) for i in made.invitations]


def test_reader_flow_resume_and_no_reanswer(study):
    path, (tok_a, _) = study
    seq = presentations(path, "reader01")
    assert len(seq) == 5 and sum(r["is_retest"] for r in seq) == 1
    with TestClient(create_app(path)) as client:
        page = client.get(f"/r/{tok_a}")
        assert page.status_code == 200 and "reader.js" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        assert client.get("/static/reader.js").status_code == 200
        state = client.get("/api/state", headers=auth(tok_a)).json()
        assert state["answered"] == 0 and state["total"] == 5 and not state["done"]
        assert state["current"]["presentation_id"] == seq[0]["presentation_id"]
        assert "truth" not in json.dumps(state) and "retest" not in json.dumps(state)
        # the pixels served are the stored 16-bit pixels, nothing else
        img = client.get(f"/api/image/{seq[0]['presentation_id']}", headers=auth(tok_a))
        with Image.open(path / "images" / f"{seq[0]['item_id']}.png") as im:
            stored = np.asarray(im).astype("<u2")
        assert img.headers["content-type"] == "application/octet-stream"
        assert np.array_equal(np.frombuffer(img.content, "<u2").reshape(state["current"]["height"], -1), stored)
        # an image ahead of the reader's position is not served
        assert client.get(f"/api/image/{seq[3]['presentation_id']}", headers=auth(tok_a)).status_code == 404
        for pos in range(2):
            r = client.post("/api/answers", headers=auth(tok_a), json={"presentation_id": seq[pos]["presentation_id"], "level": pos + 1})
            assert r.status_code == 200 and r.json()["answered"] == pos + 1
        # re-answering (changing) a saved answer is refused, as is skipping ahead
        assert client.post("/api/answers", headers=auth(tok_a), json={"presentation_id": seq[0]["presentation_id"], "level": 6}).status_code == 409
        assert client.post("/api/answers", headers=auth(tok_a), json={"presentation_id": seq[4]["presentation_id"], "level": 6}).status_code == 409
    # a fresh app (server restart) resumes at the same place
    with TestClient(create_app(path)) as client:
        state = client.get("/api/state", headers=auth(tok_a)).json()
        assert state["answered"] == 2 and state["current"]["presentation_id"] == seq[2]["presentation_id"]
        for row in seq[2:]:  # includes the retest showing: same image, answered again, allowed
            assert client.post("/api/answers", headers=auth(tok_a), json={"presentation_id": row["presentation_id"], "level": 3}).status_code == 200
        state = client.get("/api/state", headers=auth(tok_a)).json()
        assert state["done"] and state["current"] is None and state["answered"] == 5
    con = sqlite3.connect(path / db.DB_NAME)
    levels = [r[0] for r in con.execute("SELECT level FROM answers ORDER BY position")]
    assert levels == [1, 2, 3, 3, 3]
    assert con.execute("SELECT p_real FROM answers WHERE position = 0").fetchone()[0] == 0.95


def test_tokens_isolation_traversal_and_validation(study):
    path, (tok_a, tok_b) = study
    seq_a = presentations(path, "reader01")
    with TestClient(create_app(path)) as client:
        # no token -> 401, wrong token -> 403, on every API route and on the page
        assert client.get("/api/state").status_code == 401
        assert client.get("/api/state", headers={"Authorization": f"Basic {tok_a}"}).status_code == 401
        assert client.get("/api/state", headers=auth(tok_a[:-1] + ("A" if tok_a[-1] != "A" else "B"))).status_code == 403
        assert client.get(f"/api/image/{seq_a[0]['presentation_id']}").status_code == 401
        assert client.post("/api/answers", json={"presentation_id": seq_a[0]["presentation_id"], "level": 1}).status_code == 401
        assert client.get("/r/" + "x" * 43).status_code == 403
        # reader B can neither see nor answer reader A's showings
        assert client.get(f"/api/image/{seq_a[0]['presentation_id']}", headers=auth(tok_b)).status_code == 404
        r = client.post("/api/answers", headers=auth(tok_b), json={"presentation_id": seq_a[0]["presentation_id"], "level": 1})
        assert r.status_code == 404
        assert client.get("/api/state", headers=auth(tok_a)).json()["answered"] == 0
        # only study images, by showing id: no file names, no traversal, no other files
        item = seq_a[0]["item_id"]
        for bad in (
            "/study.sqlite", "/images/../study.sqlite", "/images/../../study.sqlite", f"/images/{item}.png",
            "/api/image/..%2f..%2fstudy.sqlite", "/api/image/%2e%2e%2f%2e%2e%2fstudy.sqlite",
            "/api/image/%2e%2e", f"/api/image/{item}", "/static/..%2fserver.py", "/static/%2e%2e%2fdb.py",
            "/static/../study.sqlite", "/invitations.csv", "/static/reader.js%00.png", "/docs", "/openapi.json",
        ):
            resp = client.get(bad, headers=auth(tok_a))
            assert 400 <= resp.status_code < 500, bad
            assert b"SQLite format" not in resp.content and b"invitation" not in resp.content.lower(), bad
        # bad values -> 4xx, nothing saved
        pid = seq_a[0]["presentation_id"]
        for body in (
            {"presentation_id": pid, "level": 0}, {"presentation_id": pid, "level": 7},
            {"presentation_id": pid, "level": "3"}, {"presentation_id": pid, "level": 3.5},
            {"presentation_id": pid, "level": True}, {"level": 3}, {"presentation_id": "../../x", "level": 3},
            {"presentation_id": pid, "level": 3, "truth": "real"}, {"presentation_id": pid, "level": 3, "realism": 4},
            {"presentation_id": pid, "level": 3, "elapsed_ms": -5}, [pid, 3],
        ):
            resp = client.post("/api/answers", headers=auth(tok_a), json=body)
            assert resp.status_code == 422, body
        assert client.post("/api/answers", headers={**auth(tok_a), "Content-Type": "application/json"}, content=b"{not json").status_code == 422
        big = {"presentation_id": pid, "level": 3, "pad": "x" * 10000}
        assert client.post("/api/answers", headers=auth(tok_a), json=big).status_code == 413
        assert client.get("/api/state", headers=auth(tok_a)).json()["answered"] == 0


def test_realism_score_required_when_asked(tmp_path):
    made = make_study(tmp_path, readers=1, n_per_class=2, retest=0, realism=True)
    tok = token_of(made.invitations[0].link)
    with TestClient(create_app(made.path)) as client:
        state = client.get("/api/state", headers=auth(tok)).json()
        assert state["realism_score"] is True
        pid = state["current"]["presentation_id"]
        for body in ({"presentation_id": pid, "level": 2}, {"presentation_id": pid, "level": 2, "realism": 6},
                     {"presentation_id": pid, "level": 2, "realism": 0}):
            assert client.post("/api/answers", headers=auth(tok), json=body).status_code == 422
        assert client.post("/api/answers", headers=auth(tok), json={"presentation_id": pid, "level": 2, "realism": 4}).status_code == 200


def test_demo_study_answered_through_api_then_analyzed(tmp_path):
    """Two readers, 3 + 3 images, 2 retests each, realism on; scripted answers; check the report."""
    made = make_study(tmp_path, readers=2, n_per_class=3, retest=2, realism=True, seed=5)
    path = made.path
    # reader01 is perfect and confident; reader02 always answers "slightly real" (level 3)
    script = {"reader01": lambda truth, is_retest: (1 if truth == "real" else 6),
              "reader02": lambda truth, is_retest: 3}
    realism_of = {"real": 4, "synthetic": 2}
    with TestClient(create_app(path)) as client:
        for inv in made.invitations:
            tok = token_of(inv.link)
            rows = {r["presentation_id"]: r for r in presentations(path, inv.reader)}
            state = client.get("/api/state", headers=auth(tok)).json()
            while not state["done"]:
                row = rows[state["current"]["presentation_id"]]
                level = script[inv.reader](row["truth"], row["is_retest"])
                state = client.post("/api/answers", headers=auth(tok), json={
                    "presentation_id": row["presentation_id"], "level": level,
                    "realism": realism_of[row["truth"]] if not row["is_retest"] else 3, "elapsed_ms": 1500}).json()
    report = tmp_path / "report"
    metrics = analyze_study(path, report)
    for name in ("report.html", "metrics.json", "answers.csv", "roc.png", "levels.png", "realism.png"):
        assert (report / name).is_file(), name
    on_disk = json.loads((report / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    r1, r2 = on_disk["readers"]
    assert r1["reader"] == "reader01" and r1["n_answers"] == 6 and r1["answered"] == 8
    assert r1["accuracy"] == 1.0 and r1["auc"] == 1.0
    # perfect with log-linear correction: H = 3.5/4, F = 0.5/4 -> d' = 2 Z(0.875)
    assert r1["d_prime"] == pytest.approx(2 * 1.1503494, abs=1e-6)
    assert r1["retest"] == {"n_pairs": 2, "sokal_michener": 1.0, "same_level": 1.0}
    assert r2["accuracy"] == 0.5 and r2["auc"] == 0.5 and r2["d_prime"] == pytest.approx(0.0, abs=1e-12)
    assert r2["auc_ci95_delong"] == [None, None] or r2["auc_ci95_delong"][0] <= 0.5  # all ties: zero variance
    assert r1["realism"]["real"]["mean"] == 4 and r1["realism"]["synthetic"]["mean"] == 2
    pooled = on_disk["pooled"]
    assert pooled["n_answers"] == 12 and pooled["realism"]["real"]["n"] == 6
    assert pooled["mean_reader_auc"] == pytest.approx(0.75)
    assert pooled["level_counts"]["1"] == {"real": 3, "synthetic": 0} and pooled["level_counts"]["3"]["synthetic"] == 3
    # answers.csv holds every answer with its truth; numbers match the stats module directly
    with open(report / "answers.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and {r["reader"] for r in rows} == {"reader01", "reader02"}
    first2 = [r for r in rows if r["reader"] == "reader02" and r["is_retest"] == "0"]
    truth = np.array([r["truth"] == "real" for r in first2])
    assert r2["auc"] == pytest.approx(stats.auc_mann_whitney(truth, np.array([float(r["p_real"]) for r in first2])))
    html = (report / "report.html").read_text()
    assert "reader01" in html and "Sokal-Michener" in html and 'src="roc.png"' in html


def test_cli_help_and_analyze_json(study, tmp_path):
    from typer.testing import CliRunner

    from mammosynth.cli import app

    runner = CliRunner()
    for cmd in ("create", "serve", "analyze"):
        res = runner.invoke(app, ["study", cmd, "--help"])
        assert res.exit_code == 0 and "--" in res.output
    assert "127.0.0.1" in runner.invoke(app, ["study", "serve", "--help"]).output
    path, _ = study
    res = runner.invoke(app, ["study", "analyze", str(path), "--out", str(tmp_path / "rep"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_answers"] == 0


def test_simulated_readers_through_cli_are_flagged_and_recover_d_prime(tmp_path):
    from typer.testing import CliRunner

    from mammosynth.cli import app
    from mammosynth.errors import DataError
    from mammosynth.study.create import create_study
    from mammosynth.study.simulate import simulate_readers
    from test_study_create import make_sets

    store, synth = make_sets(tmp_path, n_real=20, n_synth=20)
    study = create_study(store, synth, tmp_path / "study", readers=2, n_per_class=20, retest=4, seed=2,
                         realism_score=True).path
    runner = CliRunner()
    res = runner.invoke(app, ["study", "simulate", str(study), "--d-prime", "2.0", "--seed", "1"])
    assert res.exit_code == 0, res.output
    with pytest.raises(DataError, match="already has answers"):
        simulate_readers(study)
    res = runner.invoke(app, ["study", "analyze", str(study), "--out", str(tmp_path / "rep"), "--json"])
    metrics = json.loads(res.stdout)
    assert metrics["n_answers"] == 2 * 44 and metrics["study"]["simulated"] == {"d_prime": 2.0, "seed": 1}
    pooled = metrics["pooled"]
    # 80 first showings of 40 images by readers with true d' = 2 (AUC = Phi(2 / sqrt 2) = 0.92);
    # with 300 images the same simulation gives d' 1.92, AUC 0.907, so only sampling noise is allowed for
    assert 1.2 < pooled["d_prime"] < 3.2 and 0.8 < pooled["auc"] < 0.995
    lo, hi = pooled["auc_ci95_delong"]
    assert lo < pooled["auc"] < hi and hi - lo < 0.2
    # test-retest: recompute matches / pairs of the binary call from answers.csv by hand
    with open(tmp_path / "rep" / "answers.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = {(r["reader"], r["item_id"]): r["call"] for r in rows if r["is_retest"] == "0"}
    pairs = [(first[(r["reader"], r["item_id"])], r["call"]) for r in rows if r["is_retest"] == "1"]
    assert len(pairs) == pooled["retest"]["n_pairs"] == 8
    assert pooled["retest"]["sokal_michener"] == sum(a == b for a, b in pairs) / 8
    assert pooled["realism"]["real"]["mean"] > pooled["realism"]["synthetic"]["mean"]
    assert "SIMULATED READERS" in (tmp_path / "rep" / "report.html").read_text()
