"""Identity refinement: a few gradient steps on the identity code, so the rendered face carries it.

Why: the generator renders a code only partly: FaceNet reads the composite at cosine about 0.62 to the
code it was given. A few Adam steps on the 128-D code (never on pixels) find the code whose rendering
FaceNet reads closest to the target. Every output stays a generator output, so this is not an
adversarial pixel pattern for FaceNet: the independent dlib judge of the evaluation sees the gain too
(docs/EVALUATION.md, "Identity refinement"). The structure map, the degraded source and the crop are
fixed, so pose and expression still come from the source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .embed import FaceEmbedder
from .generator import FewShotGenerator, SourceCondition

REFINE_LR = 0.02
"""Adam's step on the unit code (each of its 128 coordinates is about 0.09 in size); chosen on the
validation pairs, where 0.04 moved the code too far from the target for the same number of steps."""

MAX_REFINE_STEPS = 50


@dataclass
class RefinedCode:
    """The refined unit codes [N, D], the generator's output for them (so the swap need not render
    again) and FaceNet's cosine to the target before and after, per face."""

    code: torch.Tensor
    generated: torch.Tensor
    mask: torch.Tensor
    cosine_before: torch.Tensor
    cosine_after: torch.Tensor


def autograd_ready(module: torch.nn.Module) -> torch.nn.Module:
    """Replace `module`'s inference tensors (made under `torch.inference_mode`, as ComfyUI runs every node)
    by plain copies, in place and once, so that gradients can flow through it; frozen, values unchanged."""
    with torch.inference_mode(False), torch.no_grad():
        for owner in module.modules():
            for name, param in list(owner._parameters.items()):
                if param is not None and param.is_inference():
                    owner._parameters[name] = torch.nn.Parameter(param.clone(), requires_grad=False)
            for name, buffer in list(owner._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    owner._buffers[name] = buffer.clone()
    return module


def _render(generator: FewShotGenerator, embedder: FaceEmbedder, condition: SourceCondition, crops: torch.Tensor,
            landmarks5: torch.Tensor, code: torch.Tensor,
            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(generated, mask, FaceNet cosine [N] of the generated face composited into its crop to `target`)."""
    rgb, mask = generator.render(condition, F.normalize(code, dim=1).to(condition.bottom.dtype))
    rgb, mask = rgb.float(), mask.float()
    composite = mask * rgb + (1 - mask) * crops.float()
    embedding = embedder.embed_crops(embedder.align(composite, landmarks5.float()))
    return rgb, mask, (embedding * target).sum(1)


def refine_identity_code(
    generator: FewShotGenerator,
    embedder: FaceEmbedder,
    degraded: torch.Tensor,
    structure: torch.Tensor,
    crops: torch.Tensor,
    landmarks5: torch.Tensor,
    code: torch.Tensor,
    steps: int,
    lr: float = REFINE_LR,
    check_interrupt: Callable[[], None] | None = None,
) -> RefinedCode:
    """Refine `code` [N, D] for the faces whose generator inputs are given; each face on its own.

    `crops` [N, 3, S, S] are the aligned source crops the face is composited into and `landmarks5`
    [N, 5, 2] their five points in crop pixels (FaceNet's alignment). The target is `code` itself:
    the render should carry the identity it was asked for. Faces do not interact (the loss is a sum
    over faces and Adam works per coordinate), so a batch refines as its faces would one by one.
    """
    with torch.inference_mode(False):  # ComfyUI runs nodes in inference mode, where nothing has a gradient
        autograd_ready(generator)
        autograd_ready(embedder)
        degraded, structure, crops, landmarks5 = (t.clone() for t in (degraded, structure, crops, landmarks5))
        target = F.normalize(code.detach().float().clone(), dim=1)
        return _refine(generator, embedder, degraded, structure, crops, landmarks5, target, steps, lr,
                       check_interrupt, code.dtype)


def _refine(generator: FewShotGenerator, embedder: FaceEmbedder, degraded: torch.Tensor, structure: torch.Tensor,
            crops: torch.Tensor, landmarks5: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
            check_interrupt: Callable[[], None] | None, dtype: torch.dtype) -> RefinedCode:
    dtype_g = next(generator.parameters()).dtype
    with torch.no_grad():  # the identity-free part of the generator, computed once for every step
        condition = generator.condition(degraded.to(dtype_g), structure.to(dtype_g))
    z = target.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    cosine_before = None
    with torch.enable_grad():
        for _ in range(steps):
            if check_interrupt is not None:
                check_interrupt()
            _, _, cosine = _render(generator, embedder, condition, crops, landmarks5, z, target)
            if cosine_before is None:
                cosine_before = cosine.detach()
            (grad,) = torch.autograd.grad((1 - cosine).sum(), z)
            z.grad = grad
            optimiser.step()
    refined = F.normalize(z.detach(), dim=1)
    with torch.no_grad():
        rgb, mask, cosine_after = _render(generator, embedder, condition, crops, landmarks5, refined, target)
    if cosine_before is None:
        cosine_before = cosine_after
    return RefinedCode(refined.to(dtype), rgb, mask, cosine_before.cpu(), cosine_after.cpu())
