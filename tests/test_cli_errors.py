"""Every command fails the same way: one line on stderr, ``mammosynth: error: ...`` naming the
file (or the option) and the reason, exit status 2 for bad input, and nothing written.

Runs each command and subcommand of ``mammosynth`` through ``mammosynth.cli.main`` once with a
bad argument (a missing file, a bad value) and once with an unknown option (which typer's
vendored click once turned into a 37-line traceback). A command added later without a case
here fails ``test_every_command_has_a_case``.
"""

from __future__ import annotations

import pytest
import typer

from mammosynth.cli import app, main

#: command path -> (arguments with {tmp} for the test's folder, text the message must hold)
BAD_INPUT = {
    "version": (["version", "extra"], "Got unexpected extra argument"),
    "train": (["train", "mask-dcgan", "--data", "{tmp}/missing.h5", "--out", "{tmp}/runs"], "{tmp}/missing.h5: no such dataset file"),
    "generate": (["generate", "{tmp}/no-run", "--out", "{tmp}/o"], "{tmp}/no-run: no such run folder"),
    "interpolate": (["interpolate", "{tmp}/no-run", "--out", "{tmp}/o"], "{tmp}/no-run: no such run folder"),
    "invert": (["invert", "{tmp}/no-run", "{tmp}/x.png", "--out", "{tmp}/o"], "{tmp}/no-run: no such run folder"),
    "compose": (["compose", "{tmp}/no-run", "--texture", "{tmp}/a.png", "--shape", "{tmp}/b.png", "--out", "{tmp}/o"],
                "{tmp}/no-run: no such run folder"),
    "insert": (["insert", "--masks", "{tmp}/no-run", "--infill", "{tmp}/no-run", "--normals", "{tmp}/n.h5", "--n", "1",
                "--out", "{tmp}/o"], "{tmp}/no-run: no such run folder"),
    "evaluate": (["evaluate", "--real", "{tmp}/missing.h5", "--synthetic", "{tmp}/no-set", "--out", "{tmp}/r"], "{tmp}/"),
    "demo": (["demo", "--out", "{tmp}/a-file"], "{tmp}/a-file: exists and is not a folder"),
    "data phantom": (["data", "phantom", "--out", "{tmp}/p.h5", "--normal-size", "big"], "--normal-size must be HxW"),
    "data ingest": (["data", "ingest", "mias", "--root", "{tmp}/no-root", "--out", "{tmp}/m.h5"], "{tmp}/no-root"),
    "data labels": (["data", "labels", "mias", "--csv", "{tmp}/Info.txt"], "{tmp}/Info.txt"),
    "data info": (["data", "info", "{tmp}/missing.h5"], "{tmp}/missing.h5"),
    "data preview": (["data", "preview", "{tmp}/missing.h5", "--out", "{tmp}/p.png"], "{tmp}/missing.h5"),
    "weights get": (["weights", "get", "--from", "{tmp}/no-archives", "--weights-dir", "{tmp}/w"], "{tmp}/no-archives"),
    "weights info": (["weights", "info", "--weights-dir", "{tmp}/a-file"], "{tmp}/a-file: not a folder"),
    "weights import-torchvision": (["weights", "import-torchvision", "vgg19", "{tmp}/missing.pth", "--weights-dir", "{tmp}/w"],
                                   "{tmp}/missing.pth"),
    "fidelity labels": (["fidelity", "labels", "--classifier", "{tmp}/no-run", "--synthetic", "{tmp}/no-set"],
                        "{tmp}/no-run: no such run folder"),
    "study create": (["study", "create", "--real", "{tmp}/missing.h5", "--synthetic", "{tmp}/no-set", "--readers", "1",
                      "--out", "{tmp}/st"], "{tmp}/"),
    "study serve": (["study", "serve", "{tmp}/no-study"], "{tmp}/no-study"),
    "study analyze": (["study", "analyze", "{tmp}/no-study", "--out", "{tmp}/r"], "{tmp}/no-study"),
    "study simulate": (["study", "simulate", "{tmp}/no-study"], "{tmp}/no-study"),
    "study status": (["study", "status", "{tmp}/no-study"], "{tmp}/no-study"),
    "benchmark downstream": (["benchmark", "downstream", "--data", "{tmp}/missing.h5", "--out", "{tmp}/b"],
                             "{tmp}/missing.h5: no such dataset file"),
}

#: Commands allowed to leave a folder after a failure (none: evaluate and study analyze read
#: their inputs before they create their report folder).
LEAVE_A_FOLDER: dict[str, tuple[str, ...]] = {}

#: A few bad values caught by typer's own parsing (min=, types, choices).
BAD_VALUES = [
    (["generate", "run", "--n", "0", "--out", "o"], "Invalid value for '--n'"),
    (["generate", "run", "--n", "many", "--out", "o"], "Invalid value for '--n'"),
    (["insert", "--masks", "m", "--infill", "i", "--normals", "n.h5", "--n", "1", "--out", "o", "--skin-margin-mm", "-1"],
     "Invalid value for '--skin-margin-mm'"),
    (["study", "serve", "s", "--port", "0"], "Invalid value for '--port'"),
    (["generate", "--out", "o"], "Missing argument"),
    (["data", "nosuch"], "No such command 'nosuch'"),
]


def _command_paths() -> set[str]:
    paths: set[str] = set()

    def walk(cmd, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, [*prefix, name])
            else:
                paths.add(" ".join([*prefix, name]))

    walk(typer.main.get_command(app), [])
    return paths


def _run(args: list[str], tmp_path, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    captured = capsys.readouterr()
    return rc, captured.err.strip().splitlines(), captured.out


def test_every_command_has_a_case():
    assert _command_paths() == set(BAD_INPUT)


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_file(command, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    args, expected = BAD_INPUT[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, err, out = _run(args, tmp_path, capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("mammosynth: error: ") and expected.replace("{tmp}", str(tmp_path)) in err[0], err[0]
    assert out == ""
    after = sorted(p.name for p in tmp_path.iterdir() if p.name not in LEAVE_A_FOLDER.get(command, ()))
    assert after == before  # no output folder, no debris



@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_unknown_option_is_one_line(command, tmp_path, capsys):
    rc, err, out = _run([*command.split(), "--bogus"], tmp_path, capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"mammosynth: error: {command}: No such option: --bogus"), err[0]
    assert f"(see 'mammosynth {command} --help')" in err[0] and out == ""


@pytest.mark.parametrize("args,expected", BAD_VALUES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD_VALUES)])
def test_bad_values_are_one_line(args, expected, tmp_path, capsys):
    rc, err, out = _run(args, tmp_path, capsys)
    assert rc == 2 and len(err) == 1 and expected in err[0], err


def test_help_and_bare_groups_are_not_errors(capsys):
    assert main(["generate", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out
    assert main(["data"]) == 2  # a group without a subcommand shows its help, as click does
    captured = capsys.readouterr()
    assert "phantom" in captured.out and "error" not in captured.err
