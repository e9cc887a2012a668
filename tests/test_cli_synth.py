"""The synthesis commands end to end through ``mammosynth.cli.main`` on tiny trained runs:
invert, compose, interpolate (loop -> strip + GIF), generate; their outputs load in pycocotools."""

from __future__ import annotations

import json

import pytest

from mammosynth.cli import main
from tests.test_inversion import runs  # noqa: F401  (a module-scoped fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _coco(path):
    from pycocotools.coco import COCO

    return COCO(str(path / "annotations.json"))


def test_invert_cli(runs, tmp_path, capsys):  # noqa: F811
    _, e_run, _, files, _ = runs
    out = tmp_path / "inv"
    assert main(["invert", str(e_run), *map(str, files), "--out", str(out), "--steps", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["images"]) == 2
    assert (out / "inversion.png").exists() and (out / "latents.npz").exists()
    assert len((out / "manifest.csv").read_text().splitlines()) == 3


def test_compose_cli(runs, tmp_path):  # noqa: F811
    _, e_run, _, files, _ = runs
    out = tmp_path / "comp"
    assert main(["compose", str(e_run), "--texture", str(files[0]), "--shape", str(files[1]), "--out", str(out), "--steps", "2"]) == 0
    assert (out / "compose.png").exists()
    assert len(_coco(out).getImgIds()) == 1


def test_interpolate_loop_cli(runs, tmp_path):  # noqa: F811
    _, e_run, _, files, _ = runs
    out = tmp_path / "loop"
    rc = main(["interpolate", str(e_run), "--mode", "loop", "--source", str(files[0]), "--source", str(files[1]),
               "--source", str(files[0]), "--steps", "2", "--out", str(out)])
    assert rc == 0
    assert (out / "strip.png").exists() and (out / "loop.gif").exists()
    rows = (out / "manifest.csv").read_text().splitlines()
    assert len(rows) >= 4  # three legs, several frames


def test_generate_cli_and_errors(runs, tmp_path, capsys):  # noqa: F811
    g_run, _, _, _, _ = runs
    out = tmp_path / "gen"
    assert main(["generate", str(g_run), "--n", "3", "--out", str(out), "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    assert len(_coco(out).getImgIds()) == 3
    # an unknown BI-RADS term is refused with the valid choices
    assert main(["generate", str(g_run), "--n", "1", "--out", str(tmp_path / "x"), "--margin", "fuzzy"]) == 2
    assert "spiculated" in capsys.readouterr().err
    # --n-features belongs to birads-aegan's feature combinations
    assert main(["generate", str(g_run), "--n", "1", "--out", str(tmp_path / "z"), "--n-features", "3"]) == 2
    assert "birads-aegan" in capsys.readouterr().err
    # a folder that is no run
    assert main(["generate", str(tmp_path), "--n", "1", "--out", str(tmp_path / "y")]) == 2
