"""Transfer learning and shipping: torchvision-layout weights, batch resizing against PIL, importing notebook
state dicts (study 000's ResNet9 class as printed in its report), ONNX/TorchScript export, predict from ONNX."""

import csv
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cifarlab
from cifarlab.cli import main
from cifarlab.data.resize import INTERPOLATIONS, resize
from cifarlab.errors import CifarlabError
from cifarlab.exporting import export, import_state_dict
from cifarlab.models import count_params, create_model, list_models
from cifarlab.models.weights import load_weights, read_state_dict
from cifarlab.training.checkpoint import build_checkpoint, save_checkpoint
from datagen import make_cifar10_python, make_unlabeled_pickle

# ---- torchvision's key names and shapes, written out from its published architecture ----------------------


def _bn(prefix, c, counter=True):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), **({f"{prefix}.num_batches_tracked": ()} if counter else {})}


def torchvision_resnet18_shapes(classes=1000):
    s = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    cin = 64
    for i, c in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            p = f"layer{i}.{j}"
            s[f"{p}.conv1.weight"] = (c, cin if j == 0 else c, 3, 3)
            s.update(_bn(f"{p}.bn1", c))
            s[f"{p}.conv2.weight"] = (c, c, 3, 3)
            s.update(_bn(f"{p}.bn2", c))
            if j == 0 and i > 1:
                s[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                s.update(_bn(f"{p}.downsample.1", c))
        cin = c
    return {**s, "fc.weight": (classes, 512), "fc.bias": (classes,)}


def torchvision_densenet121_shapes(legacy=True):
    """As in densenet121-a639ec97.pth when `legacy`: saved before PyTorch 0.4.1 (no BN step counters), its dense
    layers still say 'norm.1' for 'norm1'."""
    sep = "." if legacy else ""
    _bn = globals()["_bn"] if not legacy else (lambda prefix, c: globals()["_bn"](prefix, c, counter=False))
    s = {"features.conv0.weight": (64, 3, 7, 7), **_bn("features.norm0", 64)}
    c = 64
    for b, n in enumerate((6, 12, 24, 16), start=1):
        for k in range(1, n + 1):
            p = f"features.denseblock{b}.denselayer{k}"
            cin = c + (k - 1) * 32
            s.update(_bn(f"{p}.norm{sep}1", cin))
            s[f"{p}.conv{sep}1.weight"] = (128, cin, 1, 1)
            s.update(_bn(f"{p}.norm{sep}2", 128))
            s[f"{p}.conv{sep}2.weight"] = (32, 128, 3, 3)
        c += n * 32
        if b < 4:
            s.update(_bn(f"features.transition{b}.norm", c))
            s[f"features.transition{b}.conv.weight"] = (c // 2, c, 1, 1)
            c //= 2
    s.update(_bn("features.norm5", c))
    return {**s, "classifier.weight": (1000, c), "classifier.bias": (1000,)}


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.tensor(7) if v == () else torch.randn(v, generator=g).abs_() + 0.1 for k, v in shapes.items()}


def n_params(shapes):
    return sum(int(np.prod(v)) for k, v in shapes.items() if "running" not in k and "num_batches" not in k)


@pytest.mark.parametrize("name, shapes, published", [
    ("resnet18_imagenet", torchvision_resnet18_shapes(), 11_689_512),
    ("densenet121_imagenet", torchvision_densenet121_shapes(legacy=False), 7_978_856),
])
def test_imagenet_models_have_torchvision_keys_and_shapes(name, shapes, published):
    assert n_params(shapes) == published  # torchvision's documented parameter counts
    model = create_model(name, num_classes=1000)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert count_params(model) == published


@pytest.mark.parametrize("name, shapes", [("resnet18_imagenet", torchvision_resnet18_shapes()),
                                          ("densenet121_imagenet", torchvision_densenet121_shapes(legacy=True))])
def test_pretrained_file_loads_strictly_with_a_new_head(name, shapes, tmp_path):
    state = random_state(shapes)
    torch.save(state, tmp_path / "w.pth")
    model = create_model(name, num_classes=10)
    skipped = load_weights(model, read_state_dict(tmp_path / "w.pth"))
    assert sorted(skipped) == sorted(k for k in shapes if k.startswith(("fc.", "classifier.")))
    own = model.state_dict()
    first = "conv1.weight" if name.startswith("resnet") else "features.denseblock1.denselayer1.norm1.weight"
    src = first if first in state else first.replace("norm1", "norm.1")
    assert torch.equal(own[first], state[src])
    assert own[next(k for k in own if k.endswith("running_var"))].min() > 0.1  # buffers came too


def test_a_wrong_weights_file_names_the_mismatched_keys(tmp_path):
    state = random_state(torchvision_resnet18_shapes())
    del state["layer3.1.bn2.weight"]
    state["layer4.0.conv1.weight"] = torch.zeros(512, 128, 3, 3)
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CifarlabError) as err:
        load_weights(create_model("resnet18_imagenet"), read_state_dict(tmp_path / "bad.pth"), where="bad.pth")
    msg = str(err.value)
    assert "1 missing (layer3.1.bn2.weight)" in msg and "1 unexpected (extra.weight)" in msg
    assert "layer4.0.conv1.weight (512, 128, 3, 3) vs (512, 256, 3, 3)" in msg and "\n" not in msg


def test_a_url_is_checked_against_the_hash_in_its_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    state = random_state(torchvision_resnet18_shapes())
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    good = tmp_path / f"resnet18-{digest[:8]}.pth"
    good.write_bytes(raw.read_bytes())
    loaded = read_state_dict(good.as_uri())  # downloaded (file:// here) into $TORCH_HOME, hash checked
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])
    bad = tmp_path / "resnet18-0badc0de.pth"
    bad.write_bytes(raw.read_bytes())
    with pytest.raises(CifarlabError, match="invalid hash value"):
        read_state_dict(bad.as_uri())


def test_finetune_with_pretrained_and_frozen_backbone(tmp_path):
    state = random_state(torchvision_resnet18_shapes())
    torch.save(state, tmp_path / "w.pth")
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)
    run = cifarlab.train(None, data=str(tmp_path / "data"), model="resnet18_imagenet",
                         pretrained=str(tmp_path / "w.pth"), freeze="backbone", epochs=1, batch_size=25,
                         resize=48, interpolation="bicubic",
                         mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], out=str(tmp_path / "run"),
                         progress=False, report=False)
    ckpt = torch.load(run.run_dir / "last.pt", weights_only=True, map_location="cpu")  # trained on a GPU if any
    assert torch.equal(ckpt["state_dict"]["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])  # frozen
    assert ckpt["state_dict"]["fc.weight"].shape == (10, 512)
    m = cifarlab.evaluate(run.run_dir / "last.pt", out=tmp_path / "eval")  # evaluation resizes the same way
    assert m["top1"] == pytest.approx(run.history[-1]["val_top1"])


# ---- resizing ---------------------------------------------------------------------------------------------

PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "box": Image.BOX,
               "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}


def _photo_like(n=4, seed=0):
    """Smooth structure plus texture and hard edges: what resampling filters differ on."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    imgs = []
    for i in range(n):
        base = 128 + 90 * np.sin(6 * xx + i) * np.cos(4 * yy - i)
        img = np.stack([base, base[::-1], base[:, ::-1]], 0) + g.normal(0, 20, (3, 32, 32))
        img[:, 10:20, 12:16] = 255 * (i % 2)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(imgs)


# Shrinking with "nearest" is left out: PIL breaks exact ties its own way (pixel 11 or 12 for output 7 of
# 32 -> 20); test_nearest_shrink_picks_the_pixel_under_each_centre covers ours.
@pytest.mark.parametrize("mode, size", [(m, 224) for m in INTERPOLATIONS] + [(m, 20) for m in INTERPOLATIONS[1:]])
def test_batch_resize_matches_pil(mode, size):
    imgs = _photo_like()
    ours = resize(torch.from_numpy(imgs).double() / 255, size, mode) * 255
    for img, mine in zip(imgs, ours, strict=True):
        ref = np.asarray(Image.fromarray(img.transpose(1, 2, 0)).resize((size, size), PIL_FILTERS[mode]))
        diff = np.abs(mine.numpy().transpose(1, 2, 0) - ref.astype(np.float64))
        # PIL rounds to 8 bits after each of its two passes; one level at most, half a level on average
        assert diff.mean() < 0.5, (mode, diff.mean())
        assert diff.max() <= (0.5 if mode == "nearest" else 2.0), (mode, diff.max())


def test_nearest_shrink_picks_the_pixel_under_each_centre():
    x = torch.arange(32.0).view(1, 1, 1, 32).expand(1, 1, 2, 32) / 31
    picked = (resize(x, (2, 20), "nearest") * 31).round()[0, 0, 0].long().tolist()
    assert picked == [int((i + 0.5) * 32 / 20) for i in range(20)]


def test_box_and_nearest_agree_on_a_7x_enlargement():
    x = torch.from_numpy(_photo_like(2)).float() / 255
    assert torch.equal(resize(x, 224, "box"), resize(x, 224, "nearest"))  # as in study 002's table II


def test_data_stats_after_resizing(tmp_path, capsys):
    make_cifar10_python(tmp_path, per_batch=10, test=10)
    assert main(["data", "stats", str(tmp_path), "--json"]) == 0
    import json

    plain = json.loads(capsys.readouterr().out)
    stats = {}
    for mode in ("nearest", "box", "bilinear", "lanczos"):
        assert main(["data", "stats", str(tmp_path), "--resize", "224", "--interpolation", mode, "--json"]) == 0
        stats[mode] = json.loads(capsys.readouterr().out)
    assert stats["nearest"] == stats["box"]
    assert stats["nearest"]["mean"] == pytest.approx(plain["mean"], abs=1e-3)  # replication keeps the mean
    assert all(a < b for a, b in zip(stats["bilinear"]["std"], plain["std"], strict=True))  # smoothing lowers std


# ---- study 000's ResNet9, as printed in its report -----------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, prob_dropout=0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.dropout1 = nn.Dropout2d(p=prob_dropout)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout2 = nn.Dropout2d(p=prob_dropout)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def study000_net(seed=0):
    torch.manual_seed(seed)
    net = ResNet(BasicBlock, [1, 1, 1, 1])
    for m in net.modules():  # trained-looking BN statistics, so that evaluation mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    net.linear.weight.data.normal_(0, 1)  # a classifier that tells the images apart
    return net.eval()


def _reference_labels(net, images_uint8):
    x = (torch.from_numpy(images_uint8).float() / 255 - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5)
    with torch.no_grad():
        return net(x).argmax(1).tolist()


def _csv_labels(path):
    with open(path) as fh:
        return [(row["ID"], int(row["Labels"])) for row in csv.DictReader(fh)]


def test_import_study000_state_dict_then_predict_matches_its_own_class(tmp_path, capsys):
    net = study000_net()
    torch.save(net.state_dict(), tmp_path / "resnet9.pth")
    images = make_unlabeled_pickle(tmp_path / "nolabels.pkl", n=24)
    expected = _reference_labels(net, images)
    assert len(set(expected)) > 1  # the check below can tell models apart

    assert main(["import", str(tmp_path / "resnet9.pth"), "--model", "resnet9", "--mean", "0.5", "0.5", "0.5",
                 "--std", "0.5", "0.5", "0.5", "--out", str(tmp_path / "ck.pt")]) == 0
    assert main(["predict", str(tmp_path / "ck.pt"), "--input", str(tmp_path / "nolabels.pkl"),
                 "--out", str(tmp_path / "a.csv"), "--device", "cpu"]) == 0
    assert [label for _, label in _csv_labels(tmp_path / "a.csv")] == expected
    # the plain file works directly too, and a missing normalization is a one-line error
    assert main(["predict", str(tmp_path / "resnet9.pth"), "--model", "resnet9", "--mean", "0.5", "0.5", "0.5",
                 "--std", "0.5", "0.5", "0.5", "--input", str(tmp_path / "nolabels.pkl"),
                 "--out", str(tmp_path / "b.csv")]) == 0
    assert _csv_labels(tmp_path / "b.csv") == _csv_labels(tmp_path / "a.csv")
    capsys.readouterr()
    assert main(["import", str(tmp_path / "resnet9.pth"), "--model", "resnet9", "--out", str(tmp_path / "x.pt")]) == 2
    assert "give --mean and --std" in capsys.readouterr().err

    # and back: the exported state dict loads strictly into the study's own class
    assert main(["export", str(tmp_path / "ck.pt"), "--format", "state_dict", "--out", str(tmp_path / "back.pth")]) == 0
    again = ResNet(BasicBlock, [1, 1, 1, 1])
    again.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    assert _reference_labels(again.eval(), images) == expected


def test_import_a_kuangliu_checkpoint_saved_from_dataparallel(tmp_path):
    net = study000_net(1)
    wrapped = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net": wrapped, "acc": 93.0, "epoch": 199}, tmp_path / "ckpt.pth")  # kuangliu's main.py format
    import_state_dict(tmp_path / "ckpt.pth", "resnet9", tmp_path / "ck.pt", mean=[0.4914, 0.4822,
                                      0.4465], std=[0.2023, 0.1994, 0.2010])
    ckpt = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert ckpt["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    assert torch.equal(ckpt["state_dict"]["linear.weight"], net.linear.weight)


# ---- ONNX and TorchScript --------------------------------------------------------------------------------

def _checkpoint_of(model_name, tmp_path, num_classes=10):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{model_name}.pt"
    save_checkpoint(build_checkpoint(model=model_name, model_args={}, classes=[f"c{i}" for i in range(num_classes)],
                                     mean=[0.5] * 3, std=[0.25] * 3, state_dict=model.state_dict(), config={},
                                     metrics={}, epoch=0, step=0), path)
    return model, path


# One model of each family in the default tier (an export takes 5-20 s here); every registered one in -m slow.
QUICK_EXPORTS = {"resnet_small", "seed002_net", "seed004_resnet", "fast94", "resnet18_imagenet"}


@pytest.mark.parametrize("model_name", [m if m in QUICK_EXPORTS else pytest.param(m, marks=pytest.mark.slow)
                                        for m in list_models()])
def test_onnx_export_matches_pytorch(model_name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, path = _checkpoint_of(model_name, tmp_path)
    out = export(path, "onnx", tmp_path / "m.onnx")
    x = torch.randn(5, 3, 32, 32)  # another batch size than the export's example
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_predict_from_onnx_and_safetensors_writes_the_same_csv(tmp_path):
    pytest.importorskip("onnxruntime")
    _, path = _checkpoint_of("resnet_small", tmp_path)
    make_unlabeled_pickle(tmp_path / "nl.pkl", n=30)
    cifarlab.predict(path, tmp_path / "nl.pkl", out=tmp_path / "ckpt.csv", tta="flip")
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "nl.pkl"), "--tta",
                 "--out", str(tmp_path / "onnx.csv")]) == 0
    assert (tmp_path / "onnx.csv").read_text() == (tmp_path / "ckpt.csv").read_text()
    assert main(["export", str(path), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert main(["predict", str(tmp_path / "m.safetensors"), "--input", str(tmp_path / "nl.pkl"), "--tta",
                 "--out", str(tmp_path / "st.csv")]) == 0
    assert (tmp_path / "st.csv").read_text() == (tmp_path / "ckpt.csv").read_text()
