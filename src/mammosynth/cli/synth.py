"""CLI commands: generate, interpolate, insert (synthesis from trained runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mammosynth.cli.common import (add_samples, console, overwrite_option, print_json, save_gif, save_strip,
                                   write_samples)


def _read_mask(path: Path):
    from mammosynth.errors import DataError
    from mammosynth.synth.writer import load_png

    if not path.exists():
        raise DataError(f"{path}: mask file not found")
    try:
        return load_png(path) > 0.5
    except Exception as err:  # PIL raises many types for bad files
        raise DataError(f"{path}: cannot read the mask image ({err})") from err


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        run: Path = typer.Argument(..., help="Run folder written by `mammosynth train` (or its parent: the latest run is used)."),
        n: int = typer.Option(16, "--n", min=1, help="Number of images to generate."),
        out: Path = typer.Option(..., "--out", help="Output folder: images/, masks/, annotations.json (COCO), manifest.csv."),
        shape: Optional[str] = typer.Option(None, "--shape", help="BI-RADS shape to request (round, oval, lobulated, irregular); methods with shape control only."),
        margin: Optional[str] = typer.Option(None, "--margin", help="BI-RADS margin to request (circumscribed, obscured, microlobulated, ill_defined, spiculated)."),
        pathology: Optional[str] = typer.Option(None, "--pathology", help="benign or malignant (pathology-conditioned lesion-dcgan only)."),
        mask: Optional[Path] = typer.Option(None, "--mask", help="PNG mask to condition on (infill, mask-embedding); default: masks drawn from the training data."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same images."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        dicom: bool = typer.Option(False, "--dicom", help="Also write each image as a 16-bit DICOM marked SYNTHETIC (dicom/)."),
        n_features: Optional[int] = typer.Option(None, "--n-features", min=1, help="birads-aegan: seed features combined per sample (eq. 2 of seed 000; default from the run's config, 20 as in the paper). Fewer features give lesions closer to single seeds (see docs/birads.md)."),
        per_category: int = typer.Option(0, "--per-category", min=0, help="Instead of --n: this many images for every BI-RADS (shape, margin) category, in one set (the input of `mammosynth fidelity labels`). --shape / --margin restrict it to one row / column. Methods with shape and margin control (birads-aegan). Categories without seed lesions are skipped and listed. 0 = off."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Generate lesions (or mammograms) from a trained run, with labels written as COCO."""
        from mammosynth.data.birads import MARGINS, PATHOLOGIES, SHAPES, parse_term
        from mammosynth.synth.writer import prepare_output_dir
        from mammosynth.train.run import load_method, resolve_run

        prepare_output_dir(out, overwrite)
        if per_category:
            _generate_per_category(run, per_category, out, shape, margin, pathology, seed, batch_size, device, dicom,
                                   json_out, n_features, overwrite)
            return

        run_dir = resolve_run(run)
        method = load_method(run_dir, device=device)
        options = {"batch_size": batch_size, **_feature_options(method, n_features)}
        if shape:
            options["shape"] = parse_term(shape, SHAPES, "shape")
        if margin:
            options["margin"] = parse_term(margin, MARGINS, "margin")
        if pathology:
            options["pathology"] = parse_term(pathology, PATHOLOGIES, "pathology")
        if mask is not None:
            options["mask"] = _read_mask(mask)
        write_samples(method.generate(n, seed, **options), out, method.name, str(run_dir), total=n, progress=not json_out, dicom=dicom,
                      overwrite=overwrite)
        summary = {"out": str(out), "n": n, "method": method.name, "run": str(run_dir), "seed": seed, **{k: v for k, v in options.items() if k in ("shape", "margin", "pathology")}}
        if json_out:
            print_json(summary)
        else:
            console.print(f"wrote {n} images to [bold]{out}[/] (annotations.json, manifest.csv)")

    @app.command("interpolate")
    def interpolate(
        run: Path = typer.Argument(..., help="Run folder of a method with a latent space (birads-aegan, stylegan, stylegan-encoder)."),
        out: Path = typer.Option(..., "--out", help="Output folder (synthetic set + strip.png, and loop.gif for loops)."),
        mode: str = typer.Option("pair", "--mode", help="pair: A->B; triangle: 12 barycentric points of A,B,C; loop: A->B->C->A; category: convex combinations of features of one (shape, margin) category (eq. 2 of seed 000)."),
        source: list[str] = typer.Option([], "--source", help="Source lesion id (store source_id or index) or image path; repeat for B, C."),
        steps: int = typer.Option(8, "--steps", min=1, help="In-between points per segment (8 in seed 000)."),
        n: int = typer.Option(16, "--n", min=1, help="Samples for --mode category."),
        shape: Optional[str] = typer.Option(None, "--shape", help="Category shape for --mode category."),
        margin: Optional[str] = typer.Option(None, "--margin", help="Category margin for --mode category."),
        n_features: Optional[int] = typer.Option(None, "--n-features", min=1, help="--mode category: seed features combined per sample (default from the run's config, 20 as in seed 000)."),
        spherical: bool = typer.Option(False, "--spherical", help="Spherical (slerp) instead of linear interpolation."),
        extrapolate: float = typer.Option(0.0, "--extrapolate", min=0.0, max=0.5, help="Go beyond the endpoints by this fraction of the segment (bounded to 0.5)."),
        data: Optional[Path] = typer.Option(None, "--data", help="Dataset file holding the source lesions (default: the run's training data)."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Interpolate in a method's latent space; every output records its sources and weights."""
        from mammosynth.data.birads import MARGINS, SHAPES, parse_term
        from mammosynth.synth.writer import prepare_output_dir
        from mammosynth.train.run import load_method, resolve_run

        prepare_output_dir(out, overwrite)
        run_dir = resolve_run(run)
        method = load_method(run_dir, device=device)
        options = dict(mode=mode, sources=list(source), steps=steps, n=n, spherical=spherical, extrapolate=extrapolate,
                       seed=seed, store=str(data) if data else None, **_feature_options(method, n_features))
        if shape:
            options["shape"] = parse_term(shape, SHAPES, "shape")
        if margin:
            options["margin"] = parse_term(margin, MARGINS, "margin")
        from mammosynth.synth.inversion import latent_samples

        def figures(work_dir: Path, images: list) -> None:
            if mode != "category":
                save_strip(images, work_dir / "strip.png", max_images=64)
            if mode == "loop":
                save_gif(images, work_dir / "loop.gif")

        images = write_samples(latent_samples(method, **options), out, method.name, str(run_dir), total=None, progress=not json_out,
                               overwrite=overwrite, extras=figures)
        if json_out:
            print_json({"out": str(out), "n": len(images), "method": method.name, "mode": mode})
        else:
            console.print(f"wrote {len(images)} images to [bold]{out}[/]" + ("" if mode == "category" else " (strip.png)"))

    @app.command("invert")
    def invert(
        run: Path = typer.Argument(..., help="stylegan-encoder run folder (in-domain encoder + its frozen StyleGAN generator)."),
        images: list[Path] = typer.Argument(..., help="Image file(s) to invert (PNG/TIFF/DICOM, grayscale); resized to the generator's size."),
        out: Path = typer.Option(..., "--out", help="Output folder: the reconstructions as a synthetic set, inversion.png (target | G(E(x)) | G(w)), latents.npz."),
        steps: int = typer.Option(100, "--steps", min=0, help="Optimisation steps of eq. 4 after the encoder's start (0 = encoder only)."),
        mask: Optional[Path] = typer.Option(None, "--mask", help="Mask PNG: restrict the reconstruction and perceptual loss to its inside (masked optimisation)."),
        lambda_perceptual: float = typer.Option(5e-5, "--lambda-perceptual", help="Weight of the VGG conv4_3 perceptual term (lambda3 in seed 004)."),
        lambda_enc: float = typer.Option(2.0, "--lambda-enc", help="Weight of the encoder regulariser ||w - E(G(w))|| (lambda4 in seed 004)."),
        lr: float = typer.Option(0.01, "--lr", help="Adam learning rate for the latent code."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary (PSNR before/after per image) on stdout."),
    ) -> None:
        """Invert real images into StyleGAN's latent space: E(x), then optimisation (seed 004 eq. 4)."""
        from mammosynth.synth.inversion import invert as run_invert
        from mammosynth.synth.writer import SyntheticSetWriter, prepare_output_dir
        from mammosynth.train.run import resolve_run

        prepare_output_dir(out, overwrite)
        run_dir = resolve_run(run)
        with SyntheticSetWriter(out, "stylegan-encoder", str(run_dir), overwrite=overwrite) as writer:
            samples = run_invert(run_dir, images, writer.work_dir, steps=steps, mask=mask, lambda_perceptual=lambda_perceptual,
                                 lambda_enc=lambda_enc, lr=lr, seed=seed, device=device)
            add_samples(writer, samples, total=len(samples), progress=False)
        rows = [{"image": str(p), **{k: v for k, v in s.extra.items() if "psnr" in k}} for p, s in zip(images, samples)]
        if json_out:
            print_json({"out": str(out), "images": rows})
        else:
            for r in rows:
                console.print(r)
            console.print(f"wrote {len(samples)} reconstructions to [bold]{out}[/] (inversion.png, latents.npz)")

    @app.command("compose")
    def compose(
        run: Path = typer.Argument(..., help="stylegan-encoder run folder."),
        texture: Path = typer.Option(..., "--texture", help="Image whose texture region is transplanted."),
        shape: Path = typer.Option(..., "--shape", help="Shape template image that receives the texture."),
        out: Path = typer.Option(..., "--out", help="Output folder: the result as a synthetic set and compose.png (texture | template | paste | alpha | Poisson | G(E(paste)) | result)."),
        texture_mask: Optional[Path] = typer.Option(None, "--texture-mask", help="Mask PNG of the texture region (default: a central ellipse)."),
        steps: int = typer.Option(100, "--steps", min=0, help="Masked optimisation steps after encoding the paste."),
        lambda_perceptual: float = typer.Option(5e-5, "--lambda-perceptual", help="Weight of the perceptual term."),
        lambda_enc: float = typer.Option(2.0, "--lambda-enc", help="Weight of the encoder regulariser."),
        lr: float = typer.Option(0.01, "--lr", help="Adam learning rate for the latent code."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        overwrite: bool = overwrite_option(),
    ) -> None:
        """Paste a texture onto a shape template, encode it, refine inside the region (seed 004 Fig. 4)."""
        from mammosynth.synth.inversion import compose as run_compose
        from mammosynth.synth.writer import SyntheticSetWriter, prepare_output_dir
        from mammosynth.train.run import resolve_run

        prepare_output_dir(out, overwrite)
        run_dir = resolve_run(run)
        with SyntheticSetWriter(out, "stylegan-encoder", str(run_dir), overwrite=overwrite) as writer:
            samples = run_compose(run_dir, texture, shape, writer.work_dir, texture_mask=texture_mask, steps=steps,
                                  lambda_perceptual=lambda_perceptual, lambda_enc=lambda_enc, lr=lr, seed=seed, device=device)
            add_samples(writer, samples, total=len(samples), progress=False)
        console.print(f"wrote the composition to [bold]{out}[/] (compose.png beside the plain paste, alpha and Poisson blends)")

    @app.command("insert")
    def insert(
        masks: Path = typer.Option(..., "--masks", help="mask-dcgan run folder (draws the lesion masks)."),
        infill: Path = typer.Option(..., "--infill", help="infill run folder (draws the lesion texture)."),
        normals: Path = typer.Option(..., "--normals", help="Dataset file (.h5) holding normal mammograms with breast masks."),
        n: int = typer.Option(..., "--n", min=1, help="Number of mammograms to write, one inserted mass each."),
        out: Path = typer.Option(..., "--out", help="Output folder: images/ (16-bit PNG), masks/, annotations.json (COCO), manifest.csv, insert_report.json."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same set."),
        split: Optional[str] = typer.Option(None, "--split", help="Use normals of this split only (train, val, test); default all."),
        max_tries: int = typer.Option(50, "--max-tries", min=1, help="Positions tried per mask before drawing a new mask."),
        max_resamples: int = typer.Option(5, "--max-resamples", min=1, help="Masks drawn per image before the image is reported as failed."),
        feather: float = typer.Option(0.2, "--feather", min=0.0, max=0.5, help="Width of the blend at the patch border, as a fraction of the patch side."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print the insertion report as JSON on stdout."),
    ) -> None:
        """Paste synthetic masses into normal mammograms (seed 001): mask DCGAN, size and position sampling, infilling GAN, seamless paste, COCO boxes and masks."""
        from mammosynth.synth.insert import insert_lesions
        from mammosynth.synth.writer import prepare_output_dir
        from mammosynth.train.run import load_method, resolve_run

        prepare_output_dir(out, overwrite)
        mask_run, infill_run = resolve_run(masks), resolve_run(infill)
        mask_method = load_method(mask_run, device=device)
        infill_method = load_method(infill_run, device=device)
        report = insert_lesions(mask_method, infill_method, normals, n, out, seed=seed, split=split,
                                max_tries=max_tries, max_resamples=max_resamples, feather_frac=feather,
                                mask_run=str(mask_run), infill_run=str(infill_run), progress=not json_out,
                                overwrite=overwrite)
        if json_out:
            print_json(report.as_dict())
        else:
            console.print(f"wrote {report.written} of {n} mammograms to [bold]{out}[/] in {report.seconds:.1f} s"
                          + (f"; {len(report.failed)} could not be placed (see insert_report.json)" if report.failed else ""))


def _generate_per_category(run: Path, per: int, out: Path, shape: Optional[str], margin: Optional[str],
                           pathology: Optional[str], seed: int, batch_size: int, device: str, dicom: bool,
                           json_out: bool, n_features: Optional[int] = None, overwrite: bool = False) -> None:
    """``generate --per-category N``: N images of every (shape, margin) category in one set."""
    import itertools

    from mammosynth.data.birads import MARGINS, PATHOLOGIES, SHAPES, parse_term
    from mammosynth.errors import DataError
    from mammosynth.train.run import load_method, resolve_run

    run_dir = resolve_run(run)
    method = load_method(run_dir, device=device)
    shapes = [parse_term(shape, SHAPES, "shape")] if shape else list(SHAPES)
    margins = [parse_term(margin, MARGINS, "margin")] if margin else list(MARGINS)
    extra = {"pathology": parse_term(pathology, PATHOLOGIES, "pathology")} if pathology else {}
    extra.update(_feature_options(method, n_features))
    categories = list(itertools.product(shapes, margins))
    skipped: list[dict[str, str]] = []

    def samples():
        written = 0
        for k, (s, m) in enumerate(categories):
            try:
                for sample in method.generate(per, seed + k, shape=s, margin=m, batch_size=batch_size, **extra):
                    written += 1
                    yield sample
            except DataError as err:  # e.g. no seed lesion of this category in the data
                skipped.append({"shape": s, "margin": m, "reason": str(err)})
        if not written:  # raised inside the writer, so no empty set is left behind
            raise DataError(f"no category could be generated: {skipped[0]['reason'] if skipped else 'nothing requested'}")

    images = write_samples(samples(), out, method.name, str(run_dir), total=per * len(categories),
                           progress=not json_out, dicom=dicom, overwrite=overwrite)
    summary = {"out": str(out), "n": len(images), "per_category": per, "method": method.name, "run": str(run_dir),
               "seed": seed, "categories": len(categories) - len(skipped), "skipped": skipped}
    if json_out:
        print_json(summary)
        return
    console.print(f"wrote {len(images)} images ({per} x {len(categories) - len(skipped)} categories) to [bold]{out}[/]"
                  " (annotations.json, manifest.csv)")
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item['shape']}/{item['margin']}: {item['reason']}")


def _feature_options(method: object, n_features: Optional[int]) -> dict[str, int]:
    """``--n-features`` for the methods that combine seed features (birads-aegan); refused elsewhere."""
    from mammosynth.errors import ConfigError

    if n_features is None:
        return {}
    if getattr(method, "name", "") != "birads-aegan":
        raise ConfigError(f"--n-features applies to birads-aegan runs only (this run is {getattr(method, 'name', '?')})")
    return {"n_features": n_features}
