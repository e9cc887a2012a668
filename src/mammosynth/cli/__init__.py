"""The ``mammosynth`` command line: thin wrappers that parse options and call the library.

Each sub-module owns one group of commands and exposes ``register(app)``.
Exit status: 0 on success; non-zero with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import os
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
    from mammosynth.cli import benchmark, data, demo, evaluate, fidelity, study, synth, train, weights

    for mod in (data, train, synth, weights, evaluate, fidelity, benchmark, study, demo):
        mod.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Every failure is one line on stderr, ``mammosynth: error: ...``.

    Exit status: 0 on success; 2 for bad input (a usage error, a missing or unreadable file, a
    bad value: :class:`~mammosynth.errors.MammosynthError`); 1 for other failures; 130 when
    interrupted. Set ``MAMMOSYNTH_DEBUG=1`` to get the traceback instead of the one line.
    """
    debug = os.environ.get("MAMMOSYNTH_DEBUG", "") not in ("", "0")
    try:
        # standalone_mode=False: typer raises its (vendored click) exceptions here instead of
        # printing a multi-line panel and calling sys.exit; a typer.Exit comes back as its code
        rv = app(args=argv, prog_name="mammosynth", standalone_mode=False)
    except KeyboardInterrupt:
        print("mammosynth: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        return _fail(str(exc.code), 1)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, MammosynthError):
            return _fail(str(exc), 2)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mammosynth data`: the help, exit 2 as in click
            text = exc.format_message() if hasattr(exc, "format_message") else ""
            if text.strip():  # rich help was printed already, while the error was built
                print(text)
            return 2
        if isinstance(exc, _usage_errors()):
            return _fail(_usage_message(exc), 2)
        if isinstance(exc, _aborts()):
            return _fail("aborted", 1)
        if isinstance(exc, OSError):
            name = f"{exc.filename}: " if exc.filename else ""
            bad_input = isinstance(exc, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                                         PermissionError))
            return _fail(f"{name}{exc.strerror or exc}", 2 if bad_input else 1)
        raise
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _fail(message: str, code: int) -> int:
    print(f"mammosynth: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _usage_errors() -> tuple[type, ...]:
    """Typer's usage-error classes: since typer vendors click they derive from
    ``typer.TyperException``; older typer raised click's own ``ClickException``."""
    kinds = [getattr(typer, "TyperException", None)]
    click = sys.modules.get("click")  # only present if this typer still uses click
    kinds.append(getattr(getattr(click, "exceptions", None), "ClickException", None))
    return tuple(k for k in kinds if isinstance(k, type))


def _aborts() -> tuple[type, ...]:
    click = sys.modules.get("click")
    kinds = [typer.Abort, getattr(getattr(click, "exceptions", None), "Abort", None)]
    return tuple(k for k in kinds if isinstance(k, type))


def _usage_message(exc: Exception) -> str:
    """``generate: No such option: --bogus (see 'mammosynth generate --help')``."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    if not path:
        return message
    command = f"{path.split(' ', 1)[1]}: " if " " in path else ""
    return f"{command}{message} (see '{path} --help')"


if __name__ == "__main__":
    sys.exit(main())
