"""The real server in a subprocess (`python -m mammosynth study serve`): killed with SIGKILL
mid-study and restarted, no saved answer is lost and the reader resumes at the right image;
raw (un-normalised) traversal paths sent over a socket are refused."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mammosynth.study import db
from test_study_create import make_study, token_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(study: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mammosynth", "study", "serve", str(study), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start within 40 s")


def raw_get(port: int, path: str) -> bytes:
    """Send the path byte for byte (an HTTP client library would normalise '..')."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_sigkill_mid_study_loses_nothing_and_resumes(tmp_path):
    made = make_study(tmp_path, readers=2, n_per_class=2, retest=1)
    study, tok = made.path, token_of(made.invitations[0].link)
    headers = {"Authorization": f"Bearer {tok}"}
    port = free_port()
    proc = start_server(study, port)
    base = f"http://127.0.0.1:{port}"
    try:
        saved = []
        for level in (2, 5):
            state = httpx.get(f"{base}/api/state", headers=headers).json()
            pid = state["current"]["presentation_id"]
            r = httpx.post(f"{base}/api/answers", headers=headers, json={"presentation_id": pid, "level": level})
            assert r.status_code == 200
            saved.append((pid, level))
        for path in ("/api/image/../../study.sqlite", "/images/../study.sqlite", "/static/../../study.sqlite",
                     "/static/%2e%2e/%2e%2e/study.sqlite", "/api/image/%2e%2e%2f%2e%2e%2fstudy.sqlite"):
            reply = raw_get(port, path)
            status = int(reply.split(b" ", 2)[1])
            assert 400 <= status < 500 and b"SQLite format" not in reply, path
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs: only committed data survives
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    port2 = free_port()
    proc = start_server(study, port2)
    base = f"http://127.0.0.1:{port2}"
    try:
        state = httpx.get(f"{base}/api/state", headers=headers).json()
        assert state["answered"] == 2
        con = sqlite3.connect(study / db.DB_NAME)
        rows = con.execute("SELECT presentation_id, level FROM answers ORDER BY position").fetchall()
        third = con.execute(
            "SELECT p.presentation_id FROM presentations p JOIN readers r ON r.reader_id = p.reader_id "
            "WHERE r.name = 'reader01' AND p.position = 2").fetchone()[0]
        con.close()
        assert rows == saved
        assert state["current"]["presentation_id"] == third  # resumes at the first unanswered image
        r = httpx.post(f"{base}/api/answers", headers=headers, json={"presentation_id": saved[0][0], "level": 1})
        assert r.status_code == 409  # the saved answer stays as it was
        r = httpx.post(f"{base}/api/answers", headers=headers, json={"presentation_id": third, "level": 4})
        assert r.status_code == 200 and r.json()["answered"] == 3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_warns_on_non_loopback_host():
    from mammosynth.study.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.org")


@pytest.mark.parametrize("host", ["0.0.0.0"])
def test_serve_cli_prints_warning(tmp_path, host, monkeypatch):
    """The CLI shouts before binding to a non-loopback address (server start itself stubbed)."""
    from typer.testing import CliRunner

    import mammosynth.study.server as server
    from mammosynth.cli import app

    calls = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: calls.append((a, k)))
    res = CliRunner().invoke(app, ["study", "serve", str(tmp_path), "--host", host])
    assert res.exit_code == 0 and "WARNING" in res.output and "not a loopback" in res.output
    assert calls and calls[0][1]["host"] == host
