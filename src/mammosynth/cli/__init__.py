"""The ``mammosynth`` command line: thin wrappers that parse options and call the library.

Each sub-module owns one group of commands and exposes ``register(app)``.
Exit status: 0 on success; non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import sys

import typer

from mammosynth.errors import MammosynthError

app = typer.Typer(
    name="mammosynth",
    help="Synthesise realistic, automatically labelled breast lesions in mammograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.command("version")
def version() -> None:
    """Print the mammosynth, torch and Python versions."""
    import platform

    import torch

    from mammosynth import __version__

    typer.echo(f"mammosynth {__version__} (torch {torch.__version__}, Python {platform.python_version()})")


def _register_all() -> None:
    from mammosynth.cli import data, demo, evaluate, fidelity, study, synth, train, weights

    for mod in (data, train, synth, weights, evaluate, fidelity, study, demo):
        mod.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=False)
    except MammosynthError as err:
        print(f"mammosynth: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mammosynth: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer/click exits (e.g. --help) pass through
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
