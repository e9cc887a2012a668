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
        morphology: Optional[str] = typer.Option(None, "--morphology", help="BI-RADS calcification morphology (punctate, amorphous, pleomorphic, fine_linear_branching, ...); lesion-dcgan runs with condition morphology, birads-aegan runs with labels calcification."),
        distribution: Optional[str] = typer.Option(None, "--distribution", help="BI-RADS calcification distribution (diffuse, regional, clustered, linear, segmental); lesion-dcgan runs with condition distribution, birads-aegan runs with labels calcification."),
        lesion_type: Optional[str] = typer.Option(None, "--lesion-type", help="mass, non_mass or calcification; lesion-dcgan runs with condition lesion_type only."),
        mask: Optional[Path] = typer.Option(None, "--mask", help="PNG mask to condition on (infill, mask-embedding); default: masks drawn from the training data."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same images."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        dicom: bool = typer.Option(False, "--dicom", help="Also write each image as a 16-bit DICOM marked SYNTHETIC (dicom/)."),
        n_features: Optional[int] = typer.Option(None, "--n-features", min=1, help="birads-aegan: seed features K combined per sample (eq. 2 of seed 000; default from the run's config, 20 as in the paper). The trade-off: a large K averages many seeds into prototypical lesions of the category (the label survives, diversity falls); a small K (2-3) keeps lesions closer to single seeds (more diverse, less averaged, nearer to copies). A category with fewer seeds than K uses all of them for every sample, so its samples differ only in their weights; the output says so and the manifest records pool_size (see docs/birads.md)."),
        split: Optional[str] = typer.Option(None, "--split", help="Store split to draw from: birads-aegan seed lesions, infill tissue patches and masks (train, val, test). Default train, the split the generator learned from, so `evaluate` can compare with held-out val/test lesions."),
        truncation: Optional[float] = typer.Option(None, "--truncation", min=0.0, max=1.0, help="stylegan: truncation psi (w pulled towards the mean w). Default 1 = no truncation, what evaluation assumes; psi < 1 trades diversity for fidelity and flatters precision, FD and the two-sample test. Recorded in the manifest (extra.truncation)."),
        per_category: int = typer.Option(0, "--per-category", min=0, help="Instead of --n: this many images for every BI-RADS category the seed lesions have, in one set (the input of `mammosynth fidelity labels`): (shape, margin) pairs, or one per margin when the data has no shapes (mini-MIAS, INbreast, VinDr). --shape / --margin restrict it to one row / column. Methods with shape and margin control (birads-aegan). Categories without seed lesions are skipped and listed. 0 = off."),
        sampler_steps: Optional[int] = typer.Option(None, "--sampler-steps", min=1, help="diffusion-infill: DDIM steps (default from the run's config: 25 on the demo config, 50 on the full one). Recorded in the manifest."),
        guidance_scale: Optional[float] = typer.Option(None, "--guidance-scale", min=0.0, help="diffusion-infill: classifier-free guidance scale w on the BI-RADS labels (0 = unconditional, 1 = conditional, >1 = pushed towards the label; default from the run's config, 1). Recorded in the manifest."),
        repaint: Optional[int] = typer.Option(None, "--repaint", min=0, help="diffusion-infill: RePaint resamplings per DDIM step (0 = off, the default; each one adds a network pass per step)."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ) -> None:
        """Generate lesions (or mammograms) from a trained run, with labels written as COCO."""
        from mammosynth.data.birads import DISTRIBUTIONS, LESION_TYPES, MARGINS, MORPHOLOGIES, PATHOLOGIES, SHAPES, parse_term
        from mammosynth.errors import ConfigError
        from mammosynth.synth.writer import prepare_output_dir
        from mammosynth.train.run import load_method, resolve_run

        prepare_output_dir(out, overwrite)
        if per_category:
            _generate_per_category(run, per_category, out, shape, margin, pathology, seed, batch_size, device, dicom,
                                   json_out, n_features, split, overwrite)
            return

        run_dir = resolve_run(run)
        method = load_method(run_dir, device=device)
        options = {"batch_size": batch_size, **_feature_options(method, n_features), **_truncation_option(method, truncation),
                   **_sampling_options(method, sampler_steps, guidance_scale, repaint)}
        if split:
            options["split"] = _split(split, method)
        if shape:
            options["shape"] = parse_term(shape, SHAPES, "shape")
        if margin:
            options["margin"] = parse_term(margin, MARGINS, "margin")
        if pathology:
            options["pathology"] = parse_term(pathology, PATHOLOGIES, "pathology")
        calc_labels = {"morphology": (morphology, MORPHOLOGIES), "distribution": (distribution, DISTRIBUTIONS),
                       "lesion_type": (lesion_type, LESION_TYPES)}
        for key, (value, vocab) in calc_labels.items():
            if value:
                takers = ("lesion-dcgan",) if key == "lesion_type" else ("lesion-dcgan", "birads-aegan")
                if method.name not in takers:
                    raise ConfigError(f"--{key.replace('_', '-')} works with lesion-dcgan runs conditioned on {key}"
                                      + ("" if key == "lesion_type" else " and birads-aegan runs with labels=calcification")
                                      + f", not {method.name}; drop it")
                options[key] = parse_term(value, vocab, key.replace("_", " "))
        if mask is not None:
            options["mask"] = _read_mask(mask)
        notes: dict = {}
        write_samples(_sample_notes(method.generate(n, seed, **options), notes), out, method.name, str(run_dir), total=n,
                      progress=not json_out, dicom=dicom, overwrite=overwrite)
        summary = {"out": str(out), "n": n, "method": method.name, "run": str(run_dir), "seed": seed,
                   **{k: v for k, v in options.items() if k in ("shape", "margin", "pathology", "morphology", "distribution",
                                                                "lesion_type", "split", "truncation", "sampler_steps",
                                                                "guidance_scale", "repaint")},
                   **_notes_summary(notes)}
        if json_out:
            print_json(summary)
        else:
            console.print(f"wrote {n} images to [bold]{out}[/] (annotations.json, manifest.csv)")
            _print_notes(notes)

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
        masks: Optional[Path] = typer.Option(None, "--masks", help="mask-dcgan run folder (draws the lesion masks); needed for masses."),
        infill: Optional[Path] = typer.Option(None, "--infill", help="Infilling run folder (any method with an infill() API; draws the lesion texture); needed for masses."),
        lesion_type: str = typer.Option("mass", "--lesion-type", help="mass (mask DCGAN + infilling, the default) or calcification: one procedural calcification cluster per image (no runs needed), its size from the cluster size model in mm, each calcification 0.1-1 mm at the image's own spacing; COCO keypoints mark each calcification (docs/insert.md)."),
        morphology: Optional[str] = typer.Option(None, "--morphology", help="--lesion-type calcification: BI-RADS morphology of every cluster (punctate, amorphous, pleomorphic, fine_linear_branching, ...; docs/data.md); default: drawn per image."),
        distribution: Optional[str] = typer.Option(None, "--distribution", help="--lesion-type calcification: distribution of every cluster (diffuse, regional, clustered, linear, segmental); default: drawn per image."),
        normals: list[Path] = typer.Option(..., "--normals", help="Your mammograms: a folder (searched recursively for DICOM, PNG, TIFF, PGM), image files, or an .h5 dataset file's normals. Repeat for several."),
        n: int = typer.Option(..., "--n", min=1, help="Number of mammograms to write, one inserted mass each (images are used in sorted order, cycling when N exceeds them)."),
        out: Path = typer.Option(..., "--out", help="Output folder: images/ (same format, shape and dtype as the input), masks/, annotations.json (COCO, original pixel frame), manifest.csv, insert_report.json."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same set."),
        split: Optional[str] = typer.Option(None, "--split", help="For .h5 inputs: use normals of this split only (train, val, test); default all."),
        pixel_spacing: Optional[float] = typer.Option(None, "--pixel-spacing", min=0.001, help="Pixel spacing in mm for images whose DICOM header or folder CSV (column pixel_spacing_mm) gives none; default none: such images are refused."),
        size_from: Optional[Path] = typer.Option(None, "--size-from", help="Dataset file (.h5) whose lesions' physical sizes (mm) the size Gaussian is fitted to; default: the infill run's training data if it records sizes, else the mini-MIAS prior N(20.3 mm, 12.8 mm) (docs/insert.md)."),
        min_size_mm: float = typer.Option(4.0, "--min-size-mm", min=0.1, help="Smallest lesion side in mm; smaller draws are redrawn (default 4)."),
        max_size_mm: float = typer.Option(60.0, "--max-size-mm", min=0.2, help="Largest lesion side in mm; larger draws are redrawn (default 60)."),
        placement: str = typer.Option("seed001", "--placement", help="seed001: centre X~U(w/10,w/2), Y~U(h/4,3h/4) on the left-oriented breast (seed 001); breast: anywhere in the allowed breast region; mask:PATH: inside a region mask (one file for all images, or a folder of masks named like the images). Default seed001."),
        skin_margin_mm: float = typer.Option(5.0, "--skin-margin-mm", min=0.0, help="Minimum distance in mm between the lesion and the skin line (default 5)."),
        keep_detail: bool = typer.Option(True, "--keep-detail/--no-keep-detail", help="Add the image's own detail finer than the model's pixels (noise, fine strands) back over the infilled lesion, so it keeps the mammogram's grain (default on; docs/insert.md)."),
        fmt: str = typer.Option("auto", "--format", help="Output image format: auto (same as each input; .h5 normals give 16-bit PNG), png, tiff, pgm or dicom. Default auto."),
        dicom: bool = typer.Option(False, "--dicom", help="Shortcut for --format dicom (DICOM inputs keep every attribute; others become Secondary Capture)."),
        yolo: bool = typer.Option(False, "--yolo", help="Also write YOLO labels (labels/<stem>.txt, class 0 = mass) and yolo.yaml."),
        max_tries: int = typer.Option(50, "--max-tries", min=1, help="Positions tried per mask before drawing a new mask (default 50)."),
        max_resamples: int = typer.Option(5, "--max-resamples", min=1, help="Masks drawn per image before the image is reported as failed (default 5)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        sampler_steps: Optional[int] = typer.Option(None, "--sampler-steps", min=1, help="diffusion-infill runs: DDIM steps (default from the run's config, 25 on the demo config). Recorded in the manifest."),
        repaint: Optional[int] = typer.Option(None, "--repaint", min=0, help="diffusion-infill runs: RePaint resamplings per DDIM step (default 0 = off)."),
        overwrite: bool = overwrite_option(),
        json_out: bool = typer.Option(False, "--json", help="Print the insertion report as JSON on stdout."),
    ) -> None:
        """Insert synthetic masses (or calcification clusters) into your own mammograms (seed 001) at native resolution, in mm, off the pectoral muscle, with COCO labels in the original pixel frame and the images written back in their own format."""
        from mammosynth.errors import ConfigError
        from mammosynth.synth.insert import INSERT_LESION_TYPES, insert_lesions
        from mammosynth.synth.writer import prepare_output_dir
        from mammosynth.train.run import load_method, resolve_run

        if lesion_type not in INSERT_LESION_TYPES:
            raise ConfigError(f"--lesion-type must be one of {', '.join(INSERT_LESION_TYPES)}, got {lesion_type!r}")
        if lesion_type == "mass" and (masks is None or infill is None):
            raise ConfigError("inserting masses needs --masks (a mask-dcgan run) and --infill (an infilling run)")
        if lesion_type == "calcification" and (masks is not None or infill is not None):
            raise ConfigError("--lesion-type calcification draws clusters procedurally; drop --masks and --infill")
        if lesion_type == "mass" and (morphology or distribution):
            raise ConfigError("--morphology and --distribution go with --lesion-type calcification")
        prepare_output_dir(out, overwrite)
        mask_run = infill_run = mask_method = infill_method = None
        if lesion_type == "mass":
            mask_run, infill_run = resolve_run(masks), resolve_run(infill)
            mask_method = load_method(mask_run, device=device)
            infill_method = load_method(infill_run, device=device)
            sampling = _sampling_options(infill_method, sampler_steps, None, repaint)
            if sampling:
                infill_method.configure_sampling(**sampling)
        report = insert_lesions(mask_method, infill_method, list(normals), n, out, seed=seed, split=split,
                                size_from=size_from, pixel_spacing=pixel_spacing, placement=placement,
                                skin_margin_mm=skin_margin_mm, out_format="dicom" if dicom else fmt, yolo=yolo,
                                overwrite=overwrite, min_size_mm=min_size_mm, max_size_mm=max_size_mm,
                                max_tries=max_tries, max_resamples=max_resamples, mask_run=str(mask_run or ""),
                                infill_run=str(infill_run or ""), progress=not json_out, keep_detail=keep_detail,
                                lesion_type=lesion_type, morphology=morphology, distribution=distribution)
        if json_out:
            print_json({k: v for k, v in report.as_dict().items() if k != "images"})
        else:
            console.print(f"wrote {report.written} of {n} mammograms to [bold]{out}[/] in {report.seconds:.1f} s"
                          + (f"; {len(report.failed)} could not be placed" if report.failed else "")
                          + (f"; {len(report.skipped_normals)} images skipped" if report.skipped_normals else "")
                          + " (see insert_report.json)")


def _generate_per_category(run: Path, per: int, out: Path, shape: Optional[str], margin: Optional[str],
                           pathology: Optional[str], seed: int, batch_size: int, device: str, dicom: bool,
                           json_out: bool, n_features: Optional[int] = None, split: Optional[str] = None,
                           overwrite: bool = False) -> None:
    """``generate --per-category N``: N images of every category the seed lesions have, in one set
    ((shape, margin) pairs; one per margin on margin-only data such as mini-MIAS)."""
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
    if split:
        extra["split"] = _split(split, method)
    skipped: list[dict[str, str]] = []
    if hasattr(method, "categories"):  # the label combinations the seeds have
        found = method.categories(shape=shapes[0] if shape else None, margin=margins[0] if margin else None,
                                  pathology=extra.get("pathology"), split=extra.get("split"))
        categories = [(c["shape"], c["margin"]) for c in found["present"]]
        skipped = [{**c, "reason": f"no seed lesions of this category in split {found['split']!r} of {found['store']}"}
                   for c in found["absent"]]
    else:
        categories = list(itertools.product(shapes, margins))
    notes: dict = {}
    failed: list[dict[str, str]] = []

    def samples():
        written = 0
        for k, (s, m) in enumerate(categories):
            try:
                for sample in method.generate(per, seed + k, shape=s, margin=m, batch_size=batch_size, **extra):
                    written += 1
                    yield sample
            except DataError as err:  # e.g. no seed lesion of this category in the data
                failed.append({"shape": s, "margin": m, "reason": str(err)})
        if not written:  # raised inside the writer, so no empty set is left behind
            why = failed[0]["reason"] if failed else (skipped[0]["reason"] if skipped else "nothing requested")
            raise DataError(f"no category could be generated: {why}")

    images = write_samples(_sample_notes(samples(), notes), out, method.name, str(run_dir), total=per * len(categories),
                           progress=not json_out, dicom=dicom, overwrite=overwrite)
    skipped += failed
    n_cat = len(categories) - len(failed)
    summary = {"out": str(out), "n": len(images), "per_category": per, "method": method.name, "run": str(run_dir),
               "seed": seed, "categories": n_cat, "skipped": skipped, **_notes_summary(notes)}
    if json_out:
        print_json(summary)
        return
    console.print(f"wrote {len(images)} images ({per} x {n_cat} categories) to [bold]{out}[/]"
                  " (annotations.json, manifest.csv)")
    for item in skipped:
        console.print(f"[yellow]skipped[/] {item['shape'] or '-'}/{item['margin'] or '-'}: {item['reason']}")
    _print_notes(notes)


def _sample_notes(samples, notes: dict):
    """Pass samples through, noting what the user must be told: categories whose seed pool was
    smaller than K (birads-aegan) and reused tissue contexts (infill)."""
    for s in samples:
        pool, k = s.extra.get("pool_size"), s.extra.get("n_features_requested")
        if pool is not None and k is not None and pool < k:
            calc = getattr(s, "lesion_type", None) == "calcification"  # a calcification category: its own labels
            cat = {"morphology": s.morphology, "distribution": s.distribution} if calc else {"shape": s.shape, "margin": s.margin}
            notes.setdefault("small_seed_pools", {})[tuple(cat.values())] = {
                **cat, "pool_size": pool, "n_features_requested": k}
        if s.extra.get("context_repeat"):
            notes["context_repeats"] = notes.get("context_repeats", 0) + 1
        yield s


def _notes_summary(notes: dict) -> dict:
    out: dict = {}
    if notes.get("small_seed_pools"):
        out["small_seed_pools"] = list(notes["small_seed_pools"].values())
    if notes.get("context_repeats"):
        out["context_repeats"] = notes["context_repeats"]
    return out


def _print_notes(notes: dict) -> None:
    for v in notes.get("small_seed_pools", {}).values():
        what = "/".join(v[k] or "-" for k in (("morphology", "distribution") if "morphology" in v else ("shape", "margin")))
        console.print(f"[yellow]note[/] {what}: {v['pool_size']} seed lesions, fewer "
                      f"than K = {v['n_features_requested']}: every sample combines all {v['pool_size']} (less diverse; "
                      "manifest extra pool_size; see --n-features in `generate --help`)")
    if notes.get("context_repeats"):
        console.print(f"[yellow]note[/] {notes['context_repeats']} images reuse a tissue context already used in this set "
                      "(fresh noise; manifest extra context_repeat): the split has fewer contexts than --n")


def _split(split: str, method: object) -> str:
    """``--split`` for the methods that draw real lesions from a store (birads-aegan seeds,
    infill tissue); refused elsewhere."""
    from mammosynth.errors import ConfigError

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, got {split!r}")
    if getattr(method, "name", "") not in ("birads-aegan", "infill", "diffusion-infill"):
        raise ConfigError(f"--split applies to birads-aegan, infill and diffusion-infill runs only (this run is {getattr(method, 'name', '?')})")
    return split


def _sampling_options(method: object, steps: Optional[int], guidance: Optional[float], repaint: Optional[int]) -> dict:
    """``--sampler-steps``, ``--guidance-scale``, ``--repaint`` for diffusion runs; refused elsewhere."""
    from mammosynth.errors import ConfigError

    given = {k: v for k, v in (("sampler_steps", steps), ("guidance_scale", guidance), ("repaint", repaint)) if v is not None}
    if given and not hasattr(method, "configure_sampling"):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{flags} applies to diffusion-infill runs only (this run is {getattr(method, 'name', '?')})")
    return given


def _truncation_option(method: object, truncation: Optional[float]) -> dict[str, float]:
    """``--truncation`` for stylegan runs; refused elsewhere."""
    from mammosynth.errors import ConfigError

    if truncation is None:
        return {}
    if getattr(method, "name", "") != "stylegan":
        raise ConfigError(f"--truncation applies to stylegan runs only (this run is {getattr(method, 'name', '?')})")
    return {"truncation": float(truncation)}


def _feature_options(method: object, n_features: Optional[int]) -> dict[str, int]:
    """``--n-features`` for the methods that combine seed features (birads-aegan); refused elsewhere."""
    from mammosynth.errors import ConfigError

    if n_features is None:
        return {}
    if getattr(method, "name", "") != "birads-aegan":
        raise ConfigError(f"--n-features applies to birads-aegan runs only (this run is {getattr(method, 'name', '?')})")
    return {"n_features": n_features}
