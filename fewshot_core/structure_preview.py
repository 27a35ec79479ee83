"""Colour pictures of structure maps, for the FaceStructureMap node and training sample grids."""
from __future__ import annotations

import torch

from .align import SWAP_TEMPLATE, estimate_similarity, template_pixels, transform_points, warp_to_crop
from .detect import order_faces

# One colour per class in STRUCTURE_CHANNELS order (background, skin, brows, eyes, irises, nose, lips, mouth).
PALETTE = torch.tensor([
    [0, 0, 0], [204, 160, 130], [90, 50, 20], [130, 70, 30], [240, 240, 240], [200, 200, 255],
    [0, 120, 255], [0, 200, 120], [255, 200, 0], [220, 40, 60], [160, 20, 90], [60, 0, 30],
], dtype=torch.float32) / 255.0


def colorize_structure(maps: torch.Tensor) -> torch.Tensor:
    """Soft maps [B, N, H, W] -> RGB [B, 3, H, W]: each pixel the probability-weighted class colour."""
    palette = PALETTE[: maps.shape[1]].to(maps)
    if palette.shape[0] < maps.shape[1]:
        extra = torch.rand(maps.shape[1] - palette.shape[0], 3, generator=torch.Generator().manual_seed(0))
        palette = torch.cat([palette, extra.to(maps)])
    return torch.einsum("bnhw,nc->bchw", maps.float(), palette)


@torch.no_grad()
def render_structure_preview(model, images: torch.Tensor) -> torch.Tensor:
    """For each image: its largest face aligned to the swap crop, beside its coloured structure map.

    Images without a face give a black panel, so the batch size is kept.
    """
    size = model.generator.config.resolution if model.generator is not None else 128
    template = template_pixels(SWAP_TEMPLATE, size)
    panels = []
    for image, dets in zip(images, model.detect(images, min_face_size=20)):
        if dets.boxes.shape[0] == 0:
            panels.append(torch.zeros(3, size, 2 * size))
            continue
        face = order_faces(dets, "largest_first")
        landmarks = face.landmarks[:1].to(image)
        matrix = estimate_similarity(landmarks, template.to(image))
        crop = warp_to_crop(image[None], matrix, size)
        in_crop = transform_points(landmarks, matrix)
        colours = colorize_structure(model.structure(crop, in_crop))
        panels.append(torch.cat([crop[0].cpu(), colours[0].cpu()], dim=-1))
    return torch.stack(panels)
