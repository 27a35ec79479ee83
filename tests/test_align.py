"""5-point similarity alignment: exact recovery, warp conventions, round trips."""
from __future__ import annotations

import math

import pytest
import torch

from fewshot_core.align import (
    ARCFACE_112,
    SWAP_TEMPLATE,
    align_faces,
    estimate_similarity,
    invert_affine,
    template_pixels,
    transform_points,
    warp_from_crop,
    warp_to_crop,
)
from fewshot_core.errors import InputShapeError

FACE_LANDMARKS = torch.tensor(
    [[[96.0, 104.0], [146.0, 101.0], [122.0, 131.0], [101.0, 158.0], [142.0, 156.0]],
     [[40.0, 60.0], [70.0, 66.0], [52.0, 80.0], [41.0, 95.0], [63.0, 99.0]]]
)


def random_similarity(batch: int, gen: torch.Generator) -> torch.Tensor:
    angle = (torch.rand(batch, generator=gen) - 0.5) * 2 * math.pi
    scale = 0.3 + 3 * torch.rand(batch, generator=gen)
    rot = torch.stack((torch.stack((angle.cos(), -angle.sin()), 1), torch.stack((angle.sin(), angle.cos()), 1)), 1)
    trans = (torch.rand(batch, 2, 1, generator=gen) - 0.5) * 400
    return torch.cat((scale[:, None, None] * rot, trans), dim=2)


def blobs(points: torch.Tensor, height: int, width: int, sigma: float = 2.5) -> torch.Tensor:
    """[B, K, H, W] images with one Gaussian blob per point (pixel centres at integers)."""
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    dx = xs - points[..., 0, None, None]
    dy = ys - points[..., 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def centroids(images: torch.Tensor) -> torch.Tensor:
    """Intensity centroids [B, K, 2] of [B, K, H, W] blob images."""
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    mass = images.sum(dim=(-2, -1))
    return torch.stack(((images * xs).sum(dim=(-2, -1)) / mass, (images * ys).sum(dim=(-2, -1)) / mass), dim=-1)


def test_swap_template_values() -> None:
    expected = (ARCFACE_112 / 112 - 0.5) * 0.75 + torch.tensor([0.5, 0.46])
    torch.testing.assert_close(SWAP_TEMPLATE, expected)
    assert SWAP_TEMPLATE.shape == (5, 2) and (SWAP_TEMPLATE > 0).all() and (SWAP_TEMPLATE < 1).all()
    # spans of [0, 1] map onto the crop's full extent: 0 -> -0.5, 1 -> size - 0.5
    torch.testing.assert_close(template_pixels(torch.tensor([[0.0, 1.0]]), 64), torch.tensor([[-0.5, 63.5]]))


def test_estimate_similarity_recovers_known_transform() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = random_similarity(16, gen)
    src = torch.rand(16, 5, 2, generator=gen) * 250
    dst = transform_points(src, truth)
    torch.testing.assert_close(estimate_similarity(src, dst), truth, atol=1e-4, rtol=1e-5)
    # one shared destination for the whole batch
    shared = estimate_similarity(src, dst[3])
    torch.testing.assert_close(transform_points(src[3:4], shared[3:4]), dst[3:4], atol=1e-3, rtol=0)


def test_estimate_similarity_never_reflects_and_is_least_squares() -> None:
    gen = torch.Generator().manual_seed(2)
    src = torch.rand(8, 5, 2, generator=gen) * 100
    mirrored = src * torch.tensor([-1.0, 1.0])
    M = estimate_similarity(src, mirrored)
    assert (torch.linalg.det(M[:, :, :2]) > 0).all()
    noisy_dst = transform_points(src, random_similarity(8, gen)) + torch.randn(8, 5, 2, generator=gen)
    M = estimate_similarity(src, noisy_dst)
    best = ((transform_points(src, M) - noisy_dst) ** 2).sum()
    for _ in range(20):  # any nudge of the solution fits worse
        nudged = M + 1e-3 * torch.randn(M.shape, generator=gen) * torch.tensor([1.0, 1.0, 100.0])
        lin = nudged[:, :, :2]
        sim = 0.5 * (lin + torch.stack((torch.stack((lin[:, 1, 1], -lin[:, 1, 0]), 1),
                                        torch.stack((-lin[:, 0, 1], lin[:, 0, 0]), 1)), 1))
        nudged = torch.cat((sim, nudged[:, :, 2:]), dim=2)  # project back onto similarities
        assert ((transform_points(src, nudged) - noisy_dst) ** 2).sum() >= best


def test_estimate_similarity_rejects_bad_input() -> None:
    with pytest.raises(InputShapeError):
        estimate_similarity(torch.zeros(2, 5, 3), torch.zeros(5, 2))
    with pytest.raises(InputShapeError):
        estimate_similarity(torch.zeros(2, 5, 2), torch.zeros(4, 2))
    with pytest.raises(InputShapeError, match="coincide"):
        estimate_similarity(torch.ones(1, 5, 2), torch.rand(5, 2))


def test_invert_affine_is_exact() -> None:
    M = random_similarity(10, torch.Generator().manual_seed(3))
    M[:, 0, 1] += 0.3  # a general affine, not only similarities
    pts = torch.rand(10, 7, 2) * 200
    torch.testing.assert_close(transform_points(transform_points(pts, M), invert_affine(M)), pts, atol=1e-3, rtol=0)


def test_landmarks_into_crop_and_back_through_real_warps() -> None:
    """Blobs drawn at the landmarks land on the template in the crop, and on the landmarks again after
    warping back: checks the pixel convention of matrices, template and kornia together."""
    size, h, w = 128, 240, 200
    images = blobs(FACE_LANDMARKS, h, w)  # [2, 5, H, W]: one channel per landmark
    aligned = align_faces(images, FACE_LANDMARKS, SWAP_TEMPLATE, size)
    in_crop = centroids(aligned.crops)
    target = template_pixels(SWAP_TEMPLATE, size).expand_as(in_crop)
    mapped = transform_points(FACE_LANDMARKS, aligned.matrices)
    torch.testing.assert_close(in_crop, mapped, atol=0.25, rtol=0)
    assert (in_crop - target).norm(dim=-1).max() < 4.0  # 5 points cannot all fit a similarity exactly
    back = warp_from_crop(aligned.crops, aligned.matrices, (h, w))
    assert (centroids(back) - FACE_LANDMARKS).norm(dim=-1).max() < 1.0
    assert (transform_points(mapped, invert_affine(aligned.matrices)) - FACE_LANDMARKS).abs().max() < 1e-3


def test_smooth_image_survives_crop_and_back() -> None:
    h, w, size = 240, 200, 160
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    image = torch.stack((
        0.5 + 0.4 * torch.sin(xs / 17.0) * torch.cos(ys / 23.0),
        0.5 + 0.4 * torch.cos((xs + ys) / 29.0),
        (xs + ys) / (h + w),
    )).unsqueeze(0)
    M = estimate_similarity(FACE_LANDMARKS[:1], template_pixels(SWAP_TEMPLATE, size))
    crop = warp_to_crop(image, M, size)
    back = warp_from_crop(crop, M, (h, w))
    coverage = warp_from_crop(torch.ones(1, 1, size, size), M, (h, w))[0, 0]
    covered = coverage > 0.999
    inner = -torch.nn.functional.max_pool2d(-covered[None, None].float(), 7, 1, 3)[0, 0] > 0  # erode 3 px
    assert inner.sum() > 0.3 * h * w
    assert (back[0][:, inner] - image[0][:, inner]).abs().max() < 0.02
    assert (back[0][:, coverage == 0] == 0).all() and (coverage == 0).any()


def test_crop_outside_photo_is_filled_by_reflection_not_black() -> None:
    image = torch.full((1, 3, 100, 100), 0.7)
    M = torch.tensor([[[1.0, 0.0, 40.0], [0.0, 1.0, 40.0]]])  # the photo's corner sits inside the crop
    crop = warp_to_crop(image, M, 96)
    torch.testing.assert_close(crop, torch.full_like(crop, 0.7))


def test_align_faces_many_and_no_faces_per_image() -> None:
    size = 64
    images = torch.rand(3, 3, 120, 110)
    per_image = [FACE_LANDMARKS, torch.zeros(0, 5, 2), FACE_LANDMARKS[1:]]
    aligned = align_faces(images, per_image, SWAP_TEMPLATE, size)
    assert aligned.crops.shape == (3, 3, size, size)
    assert aligned.image_index.tolist() == [0, 0, 2]
    single = align_faces(images[2:], FACE_LANDMARKS[1:], SWAP_TEMPLATE, size)
    torch.testing.assert_close(aligned.crops[2:], single.crops)
    torch.testing.assert_close(aligned.matrices[2:], single.matrices)
    none = align_faces(images[:1], [torch.zeros(0, 5, 2)], SWAP_TEMPLATE, size)
    assert none.crops.shape == (0, 3, size, size) and none.matrices.shape == (0, 2, 3)
    with pytest.raises(InputShapeError):
        align_faces(images, per_image[:2], SWAP_TEMPLATE, size)


def test_strong_shrink_is_antialiased_without_moving_points() -> None:
    h = w = 400
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    stripes = ((xs + ys) % 2).float().expand(1, 3, h, w)  # finest possible pattern: averages to 0.5
    points = FACE_LANDMARKS[:1] * 1.6 + 20  # a big face: about 80 px between the eyes
    M = estimate_similarity(points, template_pixels(SWAP_TEMPLATE, 48))  # shrunk about 4x
    smooth = warp_to_crop(stripes, M, 48)
    aliased = warp_to_crop(stripes, M, 48, antialias=False)
    assert (smooth - 0.5).abs().max() < 0.05
    assert (aliased - 0.5).abs().max() > 0.3  # shows the test would catch a missing filter
    blob_images = blobs(points, h, w, sigma=6.0)
    in_crop = centroids(warp_to_crop(blob_images, M, 48))
    assert (in_crop - transform_points(points, M)).norm(dim=-1).max() < 0.3
