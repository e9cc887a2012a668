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


# -- outputs never overwrite and never leave debris ------------------------------------------
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mammosynth: error: "), err
    return err[0]


def test_generate_refuses_a_used_folder_unless_overwrite(runs, tmp_path, capsys):  # noqa: F811
    g_run, _, _, _, _ = runs
    out = tmp_path / "gen"
    assert main(["generate", str(g_run), "--n", "3", "--out", str(out), "--seed", "0"]) == 0
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    capsys.readouterr()
    # a rerun with another seed would silently replace the files: refused, nothing touched
    assert main(["generate", str(g_run), "--n", "2", "--out", str(out), "--seed", "1"]) == 2
    assert "output folder is not empty; pass --overwrite to replace it" in _one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == first
    assert main(["generate", str(g_run), "--n", "2", "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert len(_coco(out).getImgIds()) == 2 and len(list((out / "images").iterdir())) == 2  # no orphans of the old set
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]  # no temporary siblings


def test_interpolate_strip_is_part_of_the_atomic_set(runs, tmp_path, capsys):  # noqa: F811
    _, e_run, _, files, _ = runs
    out = tmp_path / "pair"
    args = ["interpolate", str(e_run), "--mode", "pair", "--source", str(files[0]), "--source", str(files[1]),
            "--steps", "1", "--out", str(out)]
    assert main(args) == 0
    assert (out / "strip.png").exists()
    capsys.readouterr()
    assert main(args) == 2 and "--overwrite" in _one_error_line(capsys)
    assert main([*args, "--overwrite"]) == 0 and (out / "strip.png").exists()


@pytest.mark.parametrize("command", ["invert", "compose"])
def test_invert_and_compose_refuse_a_used_folder(runs, tmp_path, capsys, command):  # noqa: F811
    _, e_run, _, files, _ = runs
    out = tmp_path / "o"
    (out / "images").mkdir(parents=True)
    (out / "images" / "old.png").write_bytes(b"old")
    args = ([command, str(e_run), str(files[0]), "--out", str(out), "--steps", "1"] if command == "invert" else
            [command, str(e_run), "--texture", str(files[0]), "--shape", str(files[1]), "--out", str(out), "--steps", "1"])
    assert main(args) == 2 and "not empty" in _one_error_line(capsys)
    assert main([*args, "--overwrite"]) == 0
    figure = "inversion.png" if command == "invert" else "compose.png"
    assert (out / figure).exists() and not (out / "images" / "old.png").exists()


def test_a_run_that_fails_midway_leaves_no_set(runs, tmp_path, capsys, monkeypatch):  # noqa: F811
    import mammosynth.train.run as run_module
    from mammosynth.errors import DataError

    g_run, _, _, _, _ = runs
    real_load = run_module.load_method

    def failing_load(*a, **k):
        method = real_load(*a, **k)
        real_generate = method.generate

        def generate(n, seed, **kw):
            yield from real_generate(2, seed, **kw)
            raise DataError("simulated failure after two images")

        method.generate = generate
        return method

    monkeypatch.setattr(run_module, "load_method", failing_load)
    out = tmp_path / "sub" / "gen"
    assert main(["generate", str(g_run), "--n", "5", "--out", str(out), "--json"]) == 2
    assert "simulated failure" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # no set, no empty folder, no temporary sibling
