"""CLI commands: train."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer

from mammosynth.models import METHODS


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def resolve_train_config(method: str, config: Path | None, sets: list[str] | None, steps: int | None,
                         device: str | None, resume_from: Path | None = None):
    """The method's config: packaged demo YAML (or ``config``, or the run's saved config when
    resuming without ``--config``) <- ``--set`` <- ``--steps`` / ``--device``. Returns (cfg, source)."""
    import yaml

    from mammosynth.config import default_config_path, from_dict, parse_overrides
    from mammosynth.errors import ConfigError
    from mammosynth.models import get_method

    method_cls = get_method(method)
    overrides = list(sets or [])
    if steps is not None:
        overrides.append(f"steps={steps}")
    if device is not None:
        overrides.append(f"device={device}")
    if config is None and resume_from is not None:
        from mammosynth.train.run import read_run_config, resolve_run

        run = resolve_run(resume_from, method)
        base = method_cls.Config.from_saved(read_run_config(run)["config"])
        source = str(run / "config.json")
    else:
        path = config if config is not None else default_config_path(method, "demo")
        base = {}
        source = str(path) if path is not None else None
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{p}: config file not found")
            try:
                base = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{p}: not valid YAML ({err})") from err
            if not isinstance(base, dict):
                raise ConfigError(f"{p}: expected a mapping at the top level")
    try:
        cfg = from_dict(method_cls.Config, _merge(base, parse_overrides(overrides)))
    except ConfigError as err:
        raise ConfigError(f"{source or 'config'}: {err}") from err
    return cfg, source


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command("train", no_args_is_help=True)
    def train_cmd(
        method: str = typer.Argument(..., help=f"Method to train, one of: {', '.join(METHODS)}.", show_default=False),
        data: Path = typer.Option(..., "--data", help="Dataset file (.h5) from `mammosynth data phantom` or `data ingest`.", show_default=False),
        out: Path = typer.Option(..., "--out", help="Parent folder of numbered runs; this run goes to OUT/NNNNN-METHOD/. With --resume: a run folder, or its parent (latest run of METHOD).", show_default=False),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config. Default: the packaged configs/METHOD-demo.yaml (with --resume: the run's saved config)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override one config key, KEY=VALUE (repeatable), e.g. --set lr=1e-4 --set batch_size=16."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Total training steps (optimiser iterations of the method); overrides the config."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where its last checkpoint stopped (raise --steps to train longer)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config as YAML and exit without training."),
        device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default from the config: auto = CUDA if available, else CPU)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar (losses, images/s)."),
    ) -> None:
        """Train METHOD on a dataset file; writes config.json, model.safetensors, checkpoint/,
        samples/ and metrics.jsonl into a numbered run folder and prints its path.

        Multi-GPU / multi-process: launch with `torchrun --nproc_per_node N -m mammosynth train ...`
        (batch_size is per process). Units: steps are iterations; batch_size is images per process.
        """
        import yaml

        from mammosynth.config import to_dict

        cfg, source = resolve_train_config(method, config, set_, steps, device, out if resume else None)
        if dry_run:
            typer.echo(f"# method: {method}" + (f"  (config: {source})" if source else ""))
            typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
            return
        from mammosynth.train.trainer import train

        run = train(method, data, out, cfg, resume=resume, progress=progress, config_source=source)
        if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
            typer.echo(str(run))
