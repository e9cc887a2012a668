"""In-domain GAN inversion and what seed 004 builds on it: per-image optimisation (eq. 4),
masked optimisation, latent interpolation loops and shape/texture composition (Fig. 3, Fig. 4).

All functions take a ``stylegan-encoder`` run (folder or loaded method). Images are read with
Pillow (8- or 16-bit grayscale; RGB is converted), resized to the generator's size and mapped
to [-1, 1]. Optimisation works in W+ (the encoder's output space), noise fixed.

Eq. 4 (terms as mean squared errors, as in the In-domain GAN inversion code)::

    w_inv = argmin_w ||m * (x - G(w))||^2 + lambda3 ||F(m * x) - F(m * G(w))||^2 + lambda4 ||w - E(G(w))||^2

starting from w = E(x); lambda3 = 5e-5, lambda4 = 2, Adam lr 0.01; ``m`` is the optional mask
(1 everywhere without one) -- the masked optimisation of seed 004 ("only using the tumor texture
region to compute the reconstruction loss").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mammosynth.errors import ConfigError, DataError
from mammosynth.io import atomic_path

# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------


def load_encoder_run(run: Any, device: str = "auto"):
    """A loaded StyleGANEncoder from a run folder (or the method itself, passed through)."""
    from mammosynth.models.stylegan_encoder import StyleGANEncoder

    if isinstance(run, StyleGANEncoder):
        return run
    from mammosynth.train.run import load_method, read_run_config, resolve_run

    path = resolve_run(run)
    method = read_run_config(path)["method"]
    if method != "stylegan-encoder":
        raise ConfigError(f"{path}: is a {method!r} run; inversion needs a `stylegan-encoder` run "
                          f"(train one with `mammosynth train stylegan-encoder --set generator_run={path}`)")
    return load_method(path, device=device, ema=True)


def read_gray(path: str | Path) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a PNG/TIFF/JPEG (8 or 16 bit; colour converted to luminance)."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                return (a / (65535.0 if a.max() > 255 else 255.0)).clip(0, 1).astype(np.float32)
            return (np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    except FileNotFoundError:
        raise DataError(f"{p}: image file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{p}: cannot read as an image ({err})") from err


def to_tensor(image01: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(H, W) array in [0, 1] -> (1,1,h,w) tensor; bilinear+antialias for images, threshold for masks."""
    t = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (t >= 0.5).float() if mode == "mask" else t


def load_image(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """(1,1,h,w) in [-1,1] from an image file resized to ``size``."""
    return to_tensor(read_gray(path), size) * 2.0 - 1.0


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """(1,1,h,w) {0,1} from a mask image (non-zero = inside); DataError when empty."""
    m = to_tensor((read_gray(path) > 0).astype(np.float32), size, mode="mask")
    if not bool(m.any()):
        raise DataError(f"{path}: the mask is empty at {size[0]}x{size[1]}")
    return m


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B,1,H,W) tensors in [-1,1] (peak 1 on the [0,1] scale)."""
    mse = ((a.float() - b.float()) / 2.0).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


# ---------------------------------------------------------------------------------------
# eq. 4
# ---------------------------------------------------------------------------------------
@dataclass
class Inversion:
    """Result of :func:`invert_tensor` for a batch of B images (tensors on CPU)."""

    w_encoder: torch.Tensor  # (B, n_ws, w_dim) or (B, w_dim): E(x)
    w_optimised: torch.Tensor
    x_encoder: torch.Tensor  # (B,1,H,W) in [-1,1]: G(E(x))
    x_optimised: torch.Tensor
    loss_history: list[float]


def invert_tensor(method, x: torch.Tensor, steps: int = 100, mask: torch.Tensor | None = None,
                  lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0, lr: float = 0.01,
                  init_w: torch.Tensor | None = None, encoder_input: torch.Tensor | None = None) -> Inversion:
    """Invert (B,1,H,W) images in [-1,1] (eq. 4). ``mask`` (B or 1,1,H,W) {0,1} restricts the
    reconstruction and perceptual terms to its inside. ``encoder_input`` (default x) is what E
    encodes for the start code (compose encodes the pasted image). Encoder/generator frozen."""
    E, G = method.nets["encoder"], method.nets["generator"]
    E.eval()
    G.eval()
    dev = next(E.parameters()).device
    x = x.to(dev).float()
    m = torch.ones_like(x[:1]) if mask is None else mask.to(dev).float()
    fn, _, scale = method.feature_fn() if lambda_perceptual > 0 else (None, "none", 0.0)
    from mammosynth.models.stylegan_encoder import perceptual_distance

    with torch.no_grad():
        w0 = E(x if encoder_input is None else encoder_input.to(dev).float()) if init_w is None else init_w.to(dev)
        x0 = G.synthesize(w0, noise_mode="const")
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    params = list(E.parameters()) + list(G.parameters())
    prev = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    history: list[float] = []
    denom = m.expand_as(x).sum().clamp_min(1.0) / x.shape[0]
    try:
        for _ in range(int(steps)):
            x_w = G.synthesize(w, noise_mode="const")
            rec = ((x - x_w) * m).pow(2).flatten(1).sum(1).mean() / denom  # mean over the masked pixels
            perc = perceptual_distance(fn, scale, x * m, x_w * m) if fn is not None else x.new_zeros(())
            enc = F.mse_loss(E(x_w), w)
            loss = rec + lambda_perceptual * perc + lambda_enc * enc
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    finally:
        for p, r in zip(params, prev):
            p.requires_grad_(r)
    with torch.no_grad():
        x_opt = G.synthesize(w, noise_mode="const")
    return Inversion(w0.detach().cpu(), w.detach().cpu(), x0.cpu(), x_opt.cpu(), history)


# ---------------------------------------------------------------------------------------
# PNG / GIF output
# ---------------------------------------------------------------------------------------
def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H,W)/(1,H,W) tensor in [-1,1] or array in [0,1] (float32 numpy) -> uint8 (H,W)."""
    if isinstance(img, torch.Tensor):
        a = img.detach().float().cpu().numpy()
        a = a.reshape(a.shape[-2:])
        a = (a + 1.0) / 2.0
    else:
        a = np.asarray(img, dtype=np.float32)
    return np.round(a.clip(0, 1) * 255.0).astype(np.uint8)


def save_png(path: str | Path, image_u8: np.ndarray) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image_u8).save(tmp, format="PNG")
    return Path(path)


def grid_u8(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile uint8 (H,W) images (all the same size) into rows with ``pad`` white pixels between."""
    h, w = rows[0][0].shape
    n_cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) - pad, n_cols * (w + pad) - pad), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            out[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = im
    return out


def save_gif(path: str | Path, frames_u8: Sequence[np.ndarray], duration_ms: int = 80, scale: int = 1) -> Path:
    """Animated GIF (looping forever) of uint8 (H,W) frames, written atomically."""
    ims = [Image.fromarray(f) for f in frames_u8]
    if scale > 1:
        ims = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in ims]
    with atomic_path(path, suffix=".gif") as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return Path(path)


# ---------------------------------------------------------------------------------------
# interpolation (seed 004 Fig. 3)
# ---------------------------------------------------------------------------------------
def interpolation_path(codes: torch.Tensor, frames: int = 8, loop: bool = True, spherical: bool = False,
                       extrapolate: float = 0.0) -> Iterator[tuple[torch.Tensor, tuple[int, int], list[float]]]:
    """Interpolation through K codes (K, ...): A -> B -> ... (-> A when ``loop``).

    Yields (code, (i, j), [1 - t, t]) with ``frames`` codes per leg at t = 0, 1/frames, ...; an
    open path ends on the last code itself. ``spherical`` uses slerp (per code vector);
    ``extrapolate`` (open A -> B only) extends t to [-e, 1 + e].
    """
    if frames < 1:
        raise ConfigError(f"frames per leg must be >= 1, got {frames}")
    K = codes.shape[0]
    legs = [(i, (i + 1) % K) for i in range(K if loop and K > 2 else K - 1)]
    if loop and K == 2:
        legs = [(0, 1), (1, 0)]
    mix = _slerp if spherical else (lambda a, b, t: torch.lerp(a, b, t))
    if extrapolate > 0 and not loop and K == 2:
        n = frames + 1
        ts = [-extrapolate + (1 + 2 * extrapolate) * k / (n - 1) for k in range(n)] if n > 1 else [0.0]
        for t in ts:
            yield mix(codes[0], codes[1], t), (0, 1), [1.0 - t, t]
        return
    for i, j in legs:
        for f in range(frames):
            t = f / frames
            yield mix(codes[i], codes[j], t), (i, j), [1.0 - t, t]
    if not loop:
        yield codes[K - 1], (K - 1, K - 1), [1.0, 0.0]


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of the last-dimension vectors of a and b (falls back to lerp when parallel)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na.clamp_min(1e-8)) * (b / nb.clamp_min(1e-8))).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    lin = torch.lerp(a, b, t)
    sl = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-8)
    return torch.where(so.abs() < 1e-4, lin, sl)


def _generator_cfg(method):
    """(G, StyleGANConfig, encoder or None) of a stylegan or stylegan-encoder method."""
    G = method.nets["generator"]
    enc = method.nets["encoder"] if "encoder" in method.nets else None
    return G, getattr(method, "gcfg", method.cfg), enc


def _store_lesion(store: str | None, key: str) -> torch.Tensor:
    """(H, W) [0,1] patch of a store lesion by index or source_id."""
    from mammosynth.data.store import Store

    if not store:
        raise ConfigError(f"source {key!r} is not an image file, and no dataset is known to look it up in (pass --data)")
    with Store(store) as s:
        if key.isdigit():
            idx = int(key)
            if idx >= s.n_lesions:
                raise DataError(f"{store}: lesion index {idx} out of range (0..{s.n_lesions - 1})")
        else:
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in s.h5["lesions/source_id"][...]]
            if key not in ids:
                raise DataError(f"{store}: no lesion with source_id {key!r} (and no file of that name)")
            idx = ids.index(key)
        return torch.from_numpy(s.lesions(indices=[idx]).patch[0].astype(np.float32))


def _codes_for_sources(method, sources: Sequence[Any], invert_steps: int, truncation: float | None,
                       lambda_perceptual: float, lambda_enc: float, store: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """W+ codes (K, n_ws, w_dim) for sources: int or "seed:N" (mapped z), image paths or store
    lesion ids/indices (encoded by E, refined by eq. 4 when ``invert_steps`` > 0)."""
    G, gcfg, enc = _generator_cfg(method)
    dev = next(G.parameters()).device
    size = tuple(G.size)
    codes, ids = [], []
    psi = gcfg.truncation_psi if truncation is None else float(truncation)
    store = store or method.data_info.get("store_path")
    for s in sources:
        seed = _seed_of(s)
        if seed is not None:
            z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
            with torch.no_grad():
                w = G.mapping(z)
                if psi != 1.0:
                    w = G.mean_w().to(w).lerp(w, psi)
                codes.append(w[:, None].expand(-1, G.n_ws, -1)[0].cpu())
            ids.append(f"seed:{seed}")
            continue
        if enc is None:
            raise ConfigError(f"source {s!r}: encoding an image needs a stylegan-encoder run; a stylegan run takes seeds (seed:N)")
        if Path(str(s)).is_file():
            x = load_image(s, size)
        else:
            x = to_tensor(_store_lesion(store, str(s)).numpy(), size) * 2.0 - 1.0
        inv = invert_tensor(method, x, steps=invert_steps, lambda_perceptual=lambda_perceptual, lambda_enc=lambda_enc)
        w = inv.w_optimised[0]
        codes.append(w if w.dim() == 2 else w[None].expand(G.n_ws, -1))
        ids.append(str(s))
    return torch.stack(codes), ids


def _seed_of(s: Any) -> int | None:
    if isinstance(s, (int, np.integer)):
        return int(s)
    if isinstance(s, str) and s.startswith("seed:") and s[5:].lstrip("-").isdigit():
        return int(s[5:])
    return None


def interpolation_samples(method, sources: Sequence[Any] = (), mode: str = "loop", steps: int = 8, spherical: bool = False,
                          extrapolate: float = 0.0, seed: int = 0, store: str | None = None, invert_steps: int = 0,
                          truncation: float | None = None, lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0,
                          **_: Any) -> list:
    """Samples along a W+ path (the options of ``mammosynth interpolate``).

    ``mode``: ``pair`` A -> B (``steps`` in-between points, then B), ``loop`` A -> B -> C -> A
    (seed 004 Fig. 3), ``triangle`` barycentric points of A, B, C. ``sources``: ints or
    ``seed:N`` (random latents), image paths, or lesion indices / source ids of ``store``
    (default: the run's dataset); without sources, seeds ``seed, seed+1, (seed+2)``.
    """
    from mammosynth.synth.sample import Sample

    if mode not in ("pair", "loop", "triangle"):
        raise ConfigError(f"interpolate mode {mode!r} is not available for {method.name}; use pair, loop or triangle")
    need = 2 if mode == "pair" else 3
    sources = list(sources) or [seed + i for i in range(need)]
    if len(sources) < (2 if mode != "triangle" else 3):
        raise ConfigError(f"interpolate --mode {mode} needs at least {2 if mode != 'triangle' else 3} sources, got {len(sources)}")
    codes, ids = _codes_for_sources(method, sources, invert_steps, truncation, lambda_perceptual, lambda_enc, store)
    G = method.nets["generator"]
    dev = next(G.parameters()).device
    if mode == "triangle":
        n = max(1, steps)
        path = []
        for i in range(n + 1):
            for j in range(n + 1 - i):
                wts = [i / n, j / n, (n - i - j) / n]
                path.append((sum(w * c for w, c in zip(wts, codes[:3])), (0, 1, 2), wts))
    else:
        path = [(c, ij, w) for c, ij, w in interpolation_path(codes, steps + 1, mode == "loop", spherical, extrapolate)]
    out = []
    with torch.no_grad():
        for k, (code, idx, wts) in enumerate(path):
            img = G.synthesize(code[None].to(dev), noise_mode="const")[0]
            out.append(Sample(image=to_uint8(img).astype(np.float32) / 255.0, seed=seed, source_ids=[ids[i] for i in idx],
                              weights=[float(w) for w in wts], extra={"frame": k, "space": "W+", "mode": mode}))
    return out


def latent_samples(method: Any, **options: Any) -> Iterator[Any]:
    """The samples of ``mammosynth interpolate`` for any method with a latent space.

    StyleGAN runs (``stylegan``, ``stylegan-encoder``) interpolate in W+ through
    :func:`interpolation_samples` (which may encode images by inversion, a synthesis-layer
    operation); other methods (birads-aegan) implement ``Method.interpolate`` themselves.
    """
    if getattr(method, "name", "") in ("stylegan", "stylegan-encoder"):
        return iter(interpolation_samples(method, **options))
    return method.interpolate(**options)


def interpolate(run: Any, sources: Sequence[str | Path | int], out_dir: str | Path, steps: int = 8, loop: bool = True,
                invert_steps: int = 0, truncation: float | None = None, lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0,
                device: str = "auto", gif_ms: int = 80, name: str = "interpolation") -> list:
    """A -> B (-> C -> A with ``loop``) through encoded images / store lesions or seeds.

    Writes ``out_dir/<name>_strip.png`` (one row per leg, ``steps + 1`` frames each) and
    ``out_dir/<name>.gif`` (looping animation). Returns the frames as Samples.
    """
    method = load_encoder_run(run, device)
    samples = interpolation_samples(method, sources=list(sources), mode="loop" if loop else "pair", steps=steps,
                                    invert_steps=invert_steps, truncation=truncation, lambda_perceptual=lambda_perceptual,
                                    lambda_enc=lambda_enc)
    out = Path(out_dir)
    frames_u8 = [to_uint8(s.image) for s in samples]
    per_leg = steps + 1
    rows = [frames_u8[i:i + per_leg] for i in range(0, len(frames_u8), per_leg)]
    save_png(out / f"{name}_strip.png", grid_u8(rows))
    save_gif(out / f"{name}.gif", frames_u8 + ([] if loop else frames_u8[::-1]), duration_ms=gif_ms,
             scale=max(1, 128 // max(frames_u8[0].shape)))
    return samples


# ---------------------------------------------------------------------------------------
# invert (files)
# ---------------------------------------------------------------------------------------
def invert(run: Any, images: Sequence[str | Path], out_dir: str | Path, steps: int = 100, mask: str | Path | None = None,
           lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0, lr: float = 0.01, seed: int = 0,
           device: str = "auto") -> list:
    """Invert image files with a stylegan-encoder run (eq. 4), optionally masked.

    Writes ``out_dir/inversion.png`` (rows: target | G(E(x)) | G(w_inv)) and
    ``out_dir/latents.npz`` (``w_encoder``, ``w_optimised`` (N, n_ws, w_dim), ``sources``,
    ``psnr_encoder``, ``psnr_optimised``). Returns one Sample per image (the optimised
    reconstruction; ``extra`` holds both PSNRs in dB).
    """
    from mammosynth.synth.sample import Sample

    if not images:
        raise ConfigError("invert needs at least one image")
    torch.manual_seed(seed)
    method = load_encoder_run(run, device)
    size = tuple(method.nets["generator"].size)
    m = load_mask(mask, size) if mask is not None else None
    out = Path(out_dir)
    samples, rows, we, wo, pe, po = [], [], [], [], [], []
    for path in images:
        x = load_image(path, size)
        inv = invert_tensor(method, x, steps=steps, mask=m, lambda_perceptual=lambda_perceptual, lambda_enc=lambda_enc, lr=lr)
        region = m if m is not None else torch.ones_like(x)
        p_enc = float(psnr(inv.x_encoder * region, x * region)[0])
        p_opt = float(psnr(inv.x_optimised * region, x * region)[0])
        rows.append([to_uint8(x[0]), to_uint8(inv.x_encoder[0]), to_uint8(inv.x_optimised[0])])
        we.append(inv.w_encoder[0].numpy())
        wo.append(inv.w_optimised[0].numpy())
        pe.append(p_enc)
        po.append(p_opt)
        samples.append(Sample(image=to_uint8(inv.x_optimised[0]).astype(np.float32) / 255.0, seed=seed, source_ids=[str(path)],
                              extra={"psnr_encoder_db": round(p_enc, 3), "psnr_optimised_db": round(p_opt, 3), "steps": int(steps),
                                     "masked": m is not None}))
    save_png(out / "inversion.png", grid_u8(rows))
    with atomic_path(out / "latents.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, w_encoder=np.stack(we), w_optimised=np.stack(wo), sources=np.array([str(p) for p in images]),
                     psnr_encoder=np.array(pe), psnr_optimised=np.array(po))
    return samples


# ---------------------------------------------------------------------------------------
# compose (seed 004 Fig. 4)
# ---------------------------------------------------------------------------------------
def default_texture_mask(size: tuple[int, int]) -> np.ndarray:
    """Centred ellipse over the middle half of each axis: where a lesion patch keeps its lesion
    (patches are context-padded so the lesion spans about the central 62%)."""
    H, W = size
    yy, xx = np.mgrid[0:H, 0:W]
    return (((yy + 0.5 - H / 2) / (H / 4)) ** 2 + ((xx + 0.5 - W / 2) / (W / 4)) ** 2) <= 1.0


def alpha_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray, feather: float = 2.0) -> np.ndarray:
    """Feathered alpha blend of ``source`` into ``target`` inside ``mask`` ((H,W) arrays in [0,1])."""
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(mask.astype(np.float32), feather) if feather > 0 else mask.astype(np.float32)
    a = np.where(mask, np.maximum(a, 0.5), a)  # keep the inside mostly source
    return (a * source + (1 - a) * target).astype(np.float32)


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Seamless cloning (Perez et al. 2003): inside ``mask`` solve lap(f) = lap(source) with f =
    target on the boundary, by conjugate gradients on the 5-point Laplacian. (H,W) in [0,1]."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg

    H, W = target.shape
    inside = mask.astype(bool).copy()
    inside[0, :] = inside[-1, :] = inside[:, 0] = inside[:, -1] = False  # the frame is boundary
    ids = -np.ones((H, W), np.int64)
    ys, xs = np.nonzero(inside)
    n = len(ys)
    if n == 0:
        return target.astype(np.float32).copy()
    ids[ys, xs] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    b = np.zeros(n, np.float64)
    src, tgt = source.astype(np.float64), target.astype(np.float64)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        b += src[ys, xs] - src[ny, nx]  # guidance field: the source's gradients
        nb = ids[ny, nx]
        inner = nb >= 0
        rows.append(np.arange(n)[inner])
        cols.append(nb[inner])
        vals.append(np.full(int(inner.sum()), -1.0))
        b[~inner] += tgt[ny[~inner], nx[~inner]]  # Dirichlet boundary from the target
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    x0 = tgt[ys, xs]
    try:
        sol, _ = cg(A, b, x0=x0, rtol=tol, maxiter=2000)
    except TypeError:  # scipy < 1.12 names it tol
        sol, _ = cg(A, b, x0=x0, tol=tol, maxiter=2000)
    out = tgt.copy()
    out[ys, xs] = sol
    return out.clip(0, 1).astype(np.float32)


def compose_tensors(method, texture: torch.Tensor, template: torch.Tensor, texture_mask: torch.Tensor, steps: int = 100,
                    lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0, lr: float = 0.01) -> dict[str, np.ndarray]:
    """Fig. 4 on (1,1,H,W) tensors in [-1,1] and a (1,1,H,W) {0,1} texture mask. Returns (H,W)
    [0,1] arrays: texture, template, paste, alpha, poisson, encoder (G(E(paste))), result."""
    m = texture_mask.float()
    paste = texture * m + template * (1 - m)
    inv = invert_tensor(method, paste, steps=steps, mask=m, lambda_perceptual=lambda_perceptual, lambda_enc=lambda_enc, lr=lr)
    u = lambda t: (t[0, 0].float().numpy() + 1.0) / 2.0  # noqa: E731
    mask_np = m[0, 0].numpy() > 0.5
    return {"texture": u(texture), "template": u(template), "paste": u(paste),
            "alpha": alpha_blend(u(template), u(texture), mask_np), "poisson": poisson_blend(u(template), u(texture), mask_np),
            "encoder": u(inv.x_encoder).clip(0, 1), "result": u(inv.x_optimised).clip(0, 1)}


COMPOSE_COLUMNS = ("texture", "template", "paste", "alpha", "poisson", "encoder", "result")


def compose(run: Any, texture: str | Path, shape_template: str | Path, out_dir: str | Path, texture_mask: str | Path | None = None,
            steps: int = 100, lambda_perceptual: float = 5e-5, lambda_enc: float = 2.0, lr: float = 0.01, seed: int = 0,
            device: str = "auto") -> list:
    """Controllable generation (seed 004 Fig. 4): paste the texture region of ``texture`` onto
    ``shape_template``, encode the paste, run the masked optimisation inside the region.

    ``texture_mask``: mask image of the region (default: central ellipse, see
    :func:`default_texture_mask`). Writes ``out_dir/compose.png``: texture | template | plain
    paste | alpha blend | Poisson blend | G(E(paste)) | result. Returns [Sample(result)] with the
    other panels' file names in ``extra``.
    """
    from mammosynth.synth.sample import Sample

    torch.manual_seed(seed)
    method = load_encoder_run(run, device)
    size = tuple(method.nets["generator"].size)
    tex = load_image(texture, size)
    tpl = load_image(shape_template, size)
    m = load_mask(texture_mask, size) if texture_mask is not None else torch.from_numpy(default_texture_mask(size)).float()[None, None]
    panels = compose_tensors(method, tex, tpl, m, steps, lambda_perceptual, lambda_enc, lr)
    out = Path(out_dir)
    save_png(out / "compose.png", grid_u8([[to_uint8(panels[k]) for k in COMPOSE_COLUMNS]]))
    for k in ("paste", "alpha", "poisson", "encoder"):
        save_png(out / f"compose_{k}.png", to_uint8(panels[k]))
    return [Sample(image=panels["result"].astype(np.float32), mask=m[0, 0].numpy() > 0.5, seed=seed,
                   source_ids=[str(texture), str(shape_template)],
                   extra={"figure": "compose.png", "columns": list(COMPOSE_COLUMNS), "steps": int(steps)})]


__all__ = ["Inversion", "invert_tensor", "invert", "interpolate", "interpolation_path", "interpolation_samples", "latent_samples", "compose",
           "compose_tensors", "poisson_blend", "alpha_blend", "psnr", "load_image", "load_mask", "save_gif", "grid_u8"]
