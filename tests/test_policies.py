"""Augmentation policies with torchvision's names and semantics (data/policies.py): each operation pinned on small
tensors (against PIL's ImageOps/ImageEnhance, torchvision's reference, where PIL has it), the magnitude tables, how
each policy picks operations per image, and MixUp/CutMix with their targets and loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from cifarlab.data import policies as P
from cifarlab.data.augment import Context, Pipeline
from cifarlab.errors import CifarlabError


def ctx(seed: int = 0) -> Context:
    return Context(torch.Generator().manual_seed(seed))


def rand_uint8(n=2, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8))


def as_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 255


def pil(u8_image: torch.Tensor) -> Image.Image:
    return Image.fromarray(u8_image.permute(1, 2, 0).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


# ---- single operations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 4, 7, 8])
def test_posterize_is_pils(bits):
    u8 = rand_uint8()
    got = (P.posterize(as_float(u8), torch.full((2,), bits)) * 255).round().to(torch.uint8)
    for i in range(2):
        assert torch.equal(got[i], from_pil(ImageOps.posterize(pil(u8[i]), bits)))


@pytest.mark.parametrize("threshold", [0, 1, 128, 200, 255])
def test_solarize_is_pils(threshold):
    u8 = rand_uint8()
    got = (P.solarize(as_float(u8), torch.full((2,), float(threshold))) * 255).round().to(torch.uint8)
    for i in range(2):
        assert torch.equal(got[i], from_pil(ImageOps.solarize(pil(u8[i]), threshold)))


def test_equalize_is_pils():
    u8 = torch.cat([rand_uint8(3, 16, 16, seed=4), (rand_uint8(1, 16, 16, seed=5) // 64) * 40])  # sparse levels
    u8[0, 1] = 77  # a constant channel: step 0, left as it is
    got = (P.equalize(as_float(u8)) * 255).round().to(torch.uint8)
    for i in range(len(u8)):
        assert torch.equal(got[i], from_pil(ImageOps.equalize(pil(u8[i])))), i


def test_autocontrast_stretches_each_channel_and_leaves_a_constant_one():
    u8 = rand_uint8(2, 8, 8, seed=1) // 2 + 40
    u8[1, 2] = 90
    got = P.autocontrast(as_float(u8))
    assert torch.allclose(got.amin(dim=(2, 3))[0], torch.zeros(3)) and torch.allclose(got.amax(dim=(2, 3))[0],
                                                                                      torch.ones(3))
    assert torch.equal(got[1, 2], as_float(u8)[1, 2])
    for i in range(2):  # PIL rounds its lookup table to whole levels
        ref = from_pil(ImageOps.autocontrast(pil(u8[i]))).float()
        assert (got[i] * 255 - ref).abs().max() <= 1.0


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.9])
def test_sharpness_is_pils_within_a_level(factor):
    u8 = rand_uint8(2, 10, 10, seed=2)
    got = P.sharpness(as_float(u8), torch.full((2,), factor)) * 255
    for i in range(2):
        ref = from_pil(ImageEnhance.Sharpness(pil(u8[i])).enhance(factor)).float()
        assert (got[i] - ref).abs().max() <= 1.0
        assert torch.equal(got[i][:, 0, :].round(), u8[i][:, 0, :].float())  # the border is kept


def test_shear_maps_pixels_as_torchvision_affine_with_center_top_left():
    x = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6).expand(1, 3, 6, 6) / 100
    for m in (0.5, -0.3, 0.9):  # (exact .5 sampling points would be a tie either way)
        got = P.shear(x, torch.tensor([m]), "x")[0, 0]
        # output (row i, col j) samples input column round(j + m (i + 0.5)) (pixel centres, nearest, zero fill)
        for i in range(6):
            for j in range(6):
                src = torch.round(torch.tensor(j + m * (i + 0.5))).int().item()
                expected = x[0, 0, i, src] if 0 <= src < 6 else 0.0
                assert got[i, j] == pytest.approx(float(expected)), (m, i, j)
        got_y = P.shear(x, torch.tensor([m]), "y")[0, 0]
        assert torch.equal(got_y, P.shear(x.transpose(2, 3), torch.tensor([m]), "x")[0, 0].T)


def test_translate_truncates_like_int_and_fills_zero():
    x = torch.ones(2, 3, 5, 5)
    got = P.translate(x, torch.tensor([2.7, -1.9]), "x")
    assert got[0, 0, :, :2].sum() == 0 and got[0, 0, :, 2:].min() == 1  # right by int(2.7) = 2
    assert got[1, 0, :, -1:].sum() == 0 and got[1, 0, :, :-1].min() == 1  # left by int(-1.9) = -1
    down = P.translate(x, torch.tensor([1.0, 0.0]), "y")
    assert down[0, 0, 0].sum() == 0 and torch.equal(down[1], x[1])


def test_magnitude_tables_are_torchvisions():
    assert P.magnitude_table("Rotate", 31, 32)[9] == pytest.approx(9.0)  # RandAugment's default bin
    assert P.magnitude_table("Rotate", 31, 32, wide=True)[30] == pytest.approx(135.0)
    assert P.magnitude_table("TranslateX", 10, 32)[9] == pytest.approx(150 / 331 * 32)
    assert P.magnitude_table("TranslateX", 31, 32, wide=True)[30] == pytest.approx(32.0)
    assert P.magnitude_table("ShearX", 10, 32)[9] == pytest.approx(0.3)
    assert P.magnitude_table("Sharpness", 31, 32, wide=True)[30] == pytest.approx(0.99)
    assert P.magnitude_table("Posterize", 10, 32).tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert P.magnitude_table("Posterize", 31, 32, wide=True).tolist()[::5] == [8, 7, 6, 5, 4, 3, 2]
    assert P.magnitude_table("Solarize", 10, 32)[[0, 9]].tolist() == [255.0, 0.0]
    assert P.magnitude_table("Equalize", 10, 32).abs().sum() == 0
    assert len(P.CIFAR10_POLICY) == 25 and P.CIFAR10_POLICY[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))


# ---- how the policies choose --------------------------------------------------------------------------------------

def _candidates(image: torch.Tensor, names, magnitude_of) -> list[torch.Tensor]:
    out = []
    for name in names:
        for sign in ((1, -1) if P.OPS[name][1] else (1,)):
            out.append(P.OPS[name][0](image[None], torch.tensor([sign * magnitude_of(name)]))[0])
    return out


def test_randaugment_gives_each_image_one_of_14_ops_at_the_fixed_bin():
    image = as_float(rand_uint8(1, 12, 12, seed=3))
    x = image.expand(700, -1, -1, -1).contiguous()
    got = P.op_randaugment(x, ctx(1), num_ops=1, magnitude=20, num_magnitude_bins=31)
    cands = _candidates(image[0], P.RAND_OPS, lambda n: float(P.magnitude_table(n, 31, 12)[20]))
    which = [next(k for k, c in enumerate(cands) if torch.allclose(g, c, atol=1e-6)) for g in got]
    assert len(set(which)) >= 20  # of 23 (op, sign) outcomes, some of which coincide
    ops = torch.randint(0, 14, (700,), generator=torch.Generator().manual_seed(1))  # the same first draw
    counts = torch.bincount(ops, minlength=14)
    assert counts.min() > 25 and counts.max() < 80  # uniform: 50 each


def test_trivial_augment_draws_op_and_bin_per_image():
    image = as_float(rand_uint8(1, 12, 12, seed=3))
    got = P.op_trivial_augment_wide(image.expand(300, -1, -1, -1).contiguous(), ctx(2))
    distinct = {tuple((g * 255).round().flatten()[:40].tolist()) for g in got}
    assert len(distinct) > 60  # ops x bins x signs: most images differ
    g = torch.Generator().manual_seed(2)
    torch.randint(0, 14, (300,), generator=g)
    bins = torch.randint(0, 31, (300,), generator=g)
    assert bins.min() == 0 and bins.max() == 30


def test_autoaugment_applies_a_step_when_its_draw_is_at_most_p(monkeypatch):
    x = as_float(rand_uint8(400, 6, 6, seed=4))
    monkeypatch.setattr(P, "CIFAR10_POLICY", [(("Invert", 1.0, None), ("Invert", 0.0, None))])
    assert torch.allclose(P.op_autoaugment(x, ctx()), 1 - x)  # p 1 always, p 0 never
    monkeypatch.setattr(P, "CIFAR10_POLICY", [(("Invert", 0.3, None), ("Solarize", 0.0, 2))])
    got = P.op_autoaugment(x, ctx())
    inverted = torch.tensor([torch.allclose(g, 1 - o) for g, o in zip(got, x, strict=True)])
    assert torch.equal(got[~inverted], x[~inverted])
    assert 0.2 < inverted.float().mean() < 0.4


def test_autoaugment_cifar10_runs_on_a_batch():
    x = as_float(rand_uint8(64, 32, 32, seed=5))
    got = P.op_autoaugment(x, ctx(3))
    assert got.shape == x.shape and got.min() >= 0 and got.max() <= 1 and not torch.equal(got, x)


def test_random_erasing_boxes():
    x = torch.ones(50, 3, 32, 32)
    got = P.op_random_erasing(x, ctx(), p=1.0, scale_min=0.25, scale_max=0.25, ratio_min=1.0, ratio_max=1.0,
                              value=0.5)
    erased = (got[:, 0] == 0.5).sum(dim=(1, 2))
    assert torch.equal(erased, torch.full((50,), 256))  # a 16 x 16 box: a quarter of the area, square
    assert torch.equal(P.op_random_erasing(x, ctx(), p=0.0), x)
    some = P.op_random_erasing(x, ctx(), p=0.5)
    share = (some != 1).flatten(1).any(1).float().mean()
    assert 0.3 < share < 0.7


# ---- MixUp and CutMix ---------------------------------------------------------------------------------------------

def _batch(n=6, classes=4):
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 8, 8) / 10
    y = F.one_hot(torch.arange(n) % classes, classes).float()
    return x.contiguous(), y


def test_mixup_mixes_with_the_previous_image_by_one_lambda():
    x, y = _batch()
    gx, gy = P.op_mixup(x, y, ctx(7), alpha=0.4)
    lam = float(gy[1, 1])  # image 1 is class 1, the previous one class 0
    assert 0 < lam < 1 and torch.allclose(gy, y * lam + y.roll(1, 0) * (1 - lam))
    assert torch.allclose(gx, x * lam + x.roll(1, 0) * (1 - lam))
    assert torch.allclose(gy.sum(1), torch.ones(6))
    same_x, same_y = P.op_mixup(x, y, ctx(7), alpha=0.4, p=0.0)
    assert torch.equal(same_x, x) and torch.equal(same_y, y)


def test_cutmix_pastes_a_box_and_weighs_targets_by_area():
    x, y = _batch()
    for seed in range(5):
        gx, gy = P.op_cutmix(x, y, ctx(seed), alpha=1.0)
        pasted = (gx[1, 0] == x[0, 0, 0, 0]).float().mean()  # image 1's pixels that came from image 0
        assert float(gy[1, 0]) == pytest.approx(float(pasted)) and float(gy[1, 1]) == pytest.approx(1 - pasted)
        rows, cols = (gx[1, 0] == x[0, 0, 0, 0]).nonzero().unbind(1)
        if len(rows):  # one rectangle
            assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_a_mixing_pipeline_trains_on_soft_targets(tmp_path):
    import cifarlab
    from datagen import make_cifar10_python

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    for aug in ([{"name": "cutmix"}], [{"name": "mixup", "alpha": 0.2}, {"name": "random_erasing"}],
                [{"name": "trivial_augment_wide"}, {"name": "randaugment"}, {"name": "autoaugment"}]):
        run = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=25, augment=aug,
                             out=str(tmp_path / aug[0]["name"]), progress=False, report=False)
        row = run.history[-1]
        assert np.isfinite(row["train_loss"]) and 0 <= row["train_top1"] <= 1


def test_pipeline_soft_targets_and_loss_agree_with_the_mixed_cross_entropy():
    x, y = _batch()
    pipe = Pipeline([{"name": "mixup", "alpha": 1.0}])
    assert pipe.mixes and not Pipeline([{"name": "autoaugment"}]).mixes
    gx, gy = pipe(x, ctx(3), y)
    lam = float(gy[1, 1])
    logits = torch.randn(6, 4)
    labels = torch.arange(6) % 4
    expected = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels.roll(1, 0))
    assert F.cross_entropy(logits, gy) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("spec,match", [
    ({"name": "mixup", "p": 2}, "'p' must be a number in \\[0, 1\\]"),
    ({"name": "randaugment", "magnitude": 31}, "must be below num_magnitude_bins"),
    ({"name": "randaugment", "num_ops": 1.5}, "'num_ops' must be a whole number"),
    ({"name": "cutmix", "alpha": 0}, "'alpha' must be a number in"),
    ({"name": "random_erasing", "scale_min": 0.5, "scale_max": 0.1}, "must not exceed"),
    ({"name": "autoaugment", "policy": "imagenet"}, "has no option 'policy'"),
    ({"name": "trivial_augment", "num_magnitude_bins": 31}, "unknown augmentation 'trivial_augment'"),
])
def test_bad_policy_options_are_one_line(spec, match):
    with pytest.raises(CifarlabError, match=match):
        Pipeline([spec])
