"""Exact semantics of the batched augmentations."""

from __future__ import annotations

import pytest
import torch

from cifarlab.data.augment import (
    Context,
    Pipeline,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    cutout,
    flip_lr,
    hsv_to_rgb,
    op_random_resized_crop,
    resized_crop,
    rgb_to_hsv,
    rotate,
    shift,
)
from cifarlab.data.formats import ImageSet
from cifarlab.data.loader import BatchLoader
from cifarlab.errors import CifarlabError


def _img(n=4, h=8, w=8):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dy,dx", [(2, 0), (0, -3), (1, 1), (-2, 3)])
def test_shift_moves_pixels_by_k(dy, dx):
    x = _img(1)
    y = shift(x, torch.tensor([dy]), torch.tensor([dx]), mode="zero")
    h, w = x.shape[2:]
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            expected = x[0, :, si, sj] if 0 <= si < h and 0 <= sj < w else torch.zeros(3)
            assert torch.equal(y[0, :, i, j], expected)


def test_shift_reflect_fills_from_image():
    x = _img(1)
    y = shift(x, torch.tensor([0]), torch.tensor([2]), mode="reflect")
    # reflect padding mirrors without repeating the edge: column -1 is column 1
    assert torch.equal(y[0, :, :, 0], x[0, :, :, 2]) and torch.equal(y[0, :, :, 1], x[0, :, :, 1])
    assert torch.equal(y[0, :, :, 2:], x[0, :, :, :-2])


def test_crop_offsets_cover_all_positions_and_no_more():
    x = torch.zeros(2000, 1, 9, 9)
    x[:, :, 4, 4] = 1  # a single bright pixel at the centre
    ctx = Context(torch.Generator().manual_seed(0))
    y = Pipeline([{"name": "crop", "padding": 2}])(x.expand(-1, 3, -1, -1).contiguous(), ctx)
    pos = y[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(cols.tolist()) == {2, 3, 4, 5, 6}


def test_flip_mask():
    x = _img(2)
    y = flip_lr(x, torch.tensor([True, False]))
    assert torch.equal(y[0], x[0].flip(2)) and torch.equal(y[1], x[1])


def test_alternating_flip_flips_each_image_once_every_two_epochs():
    n = 64
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4).clone()
    images[:, :, :, 0] = 255  # left column marks orientation
    data = ImageSet(images, torch.zeros(n, dtype=torch.long), ["a"])
    loader = BatchLoader(data, 16, mean=[0, 0, 0], std=[1, 1, 1], shuffle=True,
                         pipeline=Pipeline([{"name": "alternating_flip"}]), seed=3)
    flipped = {}
    for epoch in range(4):
        for x, _ in loader.epoch(epoch):
            ident = (x[:, 0, 1, 1] * 255).round().long()  # unchanged interior pixel identifies the image
            for i, f in zip(ident.tolist(), (x[:, 0, 0, 3] > 0.99).tolist(), strict=True):
                flipped.setdefault(i, []).append(f)
    assert len(flipped) == n
    for seq in flipped.values():
        assert seq[0] != seq[1] and seq[1] != seq[2] and seq[2] != seq[3]
    first = [seq[0] for seq in flipped.values()]
    assert 0 < sum(first) < n  # a random half starts flipped


def test_rotate_zero_is_identity_and_90_is_rot90():
    x = _img(2, 8, 8)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-6)
    y = rotate(x, torch.full((2,), 90.0), "nearest")
    assert torch.allclose(y, torch.rot90(x, 1, dims=(2, 3)), atol=1e-6)


def test_color_ops():
    x = _img(3)
    ones = torch.ones(3)
    assert torch.allclose(adjust_brightness(x, ones), x)
    assert torch.allclose(adjust_brightness(x, torch.zeros(3)), torch.zeros_like(x))
    assert torch.allclose(adjust_saturation(x, ones), x, atol=1e-6)
    gray = adjust_saturation(x, torch.zeros(3))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    assert torch.allclose(adjust_hue(x, torch.zeros(3)), x, atol=1e-5)
    # a full turn of the hue circle changes nothing; half a turn maps pure red to cyan
    assert torch.allclose(adjust_hue(x, ones), x, atol=1e-5)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    assert torch.allclose(adjust_hue(red, torch.tensor([0.5]))[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0]))


def test_cutout_zeroes_exact_square():
    x = torch.ones(1, 3, 10, 10)
    y = cutout(x, torch.tensor([5]), torch.tensor([5]), 4)
    assert (y == 0).sum() == 3 * 16 and (y[0, :, 3:7, 3:7] == 0).all()
    edge = cutout(x, torch.tensor([0]), torch.tensor([0]), 4)
    assert (edge == 0).sum() == 3 * 4  # clipped at the border


def test_color_jitter_applies_each_images_own_order():
    x = _img(2)
    b = torch.tensor([1.8, 1.8])
    c = torch.tensor([0.3, 0.3])
    got = color_jitter(x, {"brightness": b, "contrast": c}, torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]))
    b_then_c = adjust_contrast(adjust_brightness(x, b), c)
    c_then_b = adjust_brightness(adjust_contrast(x, c), b)
    assert not torch.allclose(b_then_c, c_then_b)  # clipping makes the order matter
    assert torch.allclose(got[0], b_then_c[0]) and torch.allclose(got[1], c_then_b[1])


def test_color_jitter_op_draws_a_random_order_per_image_like_torchvision():
    x = _img(64)
    spec = {"name": "color_jitter", "brightness": 0.8, "contrast": 0.8}
    rand = Pipeline([spec])(x, Context(torch.Generator().manual_seed(3)))
    fixed = Pipeline([{**spec, "order": "fixed"}])(x, Context(torch.Generator().manual_seed(3)))
    # the same factors are drawn first either way, so images whose drawn order is brightness-first agree
    same = torch.isclose(rand, fixed).flatten(1).all(1)
    assert 0 < same.sum() < len(x)
    with pytest.raises(CifarlabError, match="'order' must be one of"):
        Pipeline([{**spec, "order": "sorted"}])


def test_pipeline_is_deterministic_per_generator_and_validates():
    x = _img(8, 32, 32)
    specs = [{"name": "color_jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
             {"name": "flip"}, {"name": "crop", "padding": 4}, {"name": "rotate", "degrees": 10},
             {"name": "translate", "max_shift": 2}, {"name": "cutout", "size": 8}]
    a = Pipeline(specs)(x, Context(torch.Generator().manual_seed(1)))
    b = Pipeline(specs)(x, Context(torch.Generator().manual_seed(1)))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    with pytest.raises(CifarlabError, match="unknown augmentation 'blur'; valid: crop"):
        Pipeline([{"name": "blur"}])
    with pytest.raises(CifarlabError, match="has no option 'pad'; valid: padding, mode"):
        Pipeline([{"name": "crop", "pad": 4}])
    with pytest.raises(CifarlabError, match="must be one of"):
        Pipeline([{"name": "crop", "mode": "wrap"}])


def test_resized_crop_is_pil_crop_then_bilinear_resize():
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    img = g.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    for top, left, h, w in [(0, 0, 32, 32), (5, 3, 16, 16), (0, 10, 20, 12), (20, 1, 11, 30)]:
        ours = resized_crop(x, *(torch.tensor([v]) for v in (top, left, h, w)))[0] * 255
        pil = Image.fromarray(img).crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).double()
        err = (ours.round() - ref).abs()
        assert err.max() <= 1 and err.mean() < 0.4, (top, left, h, w)  # PIL rounds to 8 bits between passes
    assert torch.allclose(resized_crop(x, *(torch.tensor([v]) for v in (0, 0, 32, 32))), x, atol=1e-6)


def test_random_resized_crop_boxes_follow_scale_and_ratio(monkeypatch):
    import cifarlab.data.augment as aug

    seen = []

    def spy(x, top, left, h, w):
        seen.append((top, left, h, w))
        return x

    monkeypatch.setattr(aug, "resized_crop", spy)
    x = torch.zeros(4000, 3, 32, 32)
    op_random_resized_crop(x, Context(torch.Generator().manual_seed(0)), scale_min=0.25, scale_max=0.5)
    op_random_resized_crop(x, Context(torch.Generator().manual_seed(0)), scale_min=1.0, scale_max=1.0,
                           ratio_min=1.0, ratio_max=1.0)
    monkeypatch.undo()
    (top, left, h, w), (t1, l1, h1, w1) = seen
    area = h * w / 1024
    assert 0.23 <= area.min() and area.max() <= 0.52  # 0.25-0.5 up to rounding of each side
    ratio = w / h
    assert 0.7 <= ratio.min() and ratio.max() <= 1.4 and ratio.min() < 0.8 and ratio.max() > 1.25
    assert (top >= 0).all() and (top + h <= 32).all() and (left >= 0).all() and (left + w <= 32).all()
    assert top.max() > 10 and left.max() > 10  # boxes spread over the image
    assert (h1 == 32).all() and (w1 == 32).all() and (t1 == 0).all() and (l1 == 0).all()  # the whole image
    y = Pipeline([{"name": "random_resized_crop", "scale_min": 0.5}])(torch.rand(6, 3, 32, 32),
                                                                        Context(torch.Generator().manual_seed(0)))
    assert y.shape == (6, 3, 32, 32)
