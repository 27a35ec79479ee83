"""CPU time per stage for one face in a 1024 px photo, and peak memory.

`python -m fewshot_core.eval bench [--threads 2] [--repeats 5]`. With no trained
generator it times a random-weight generator of the same architecture: a speed
figure only, never a quality one.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..align import SWAP_TEMPLATE, estimate_similarity, template_pixels, transform_points, warp_to_crop
from ..detect import order_faces
from ..errors import FewShotError
from ..generator import GeneratorConfig, degrade_for_inference, random_generator
from ..identity_refine import refine_identity_code
from ..imageio import load_image
from ..paste import color_match, paste_back, photo_detail
from ..pipeline import SwapModel, SwapSettings
from ..structure_lock import LOCK_DETAIL
from ..weights import default_generator_path
from .split import default_data_root

DEFAULT_PHOTO = Path("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")
"""Under the shared data folder (`FEWSHOT_DATA_DIR`, else ../shared/data), unless `--photo` names another."""


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median milliseconds of `fn()` over `repeats` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.eval bench")
    parser.add_argument("--photo", type=Path, default=None,
                        help=f"a photo with one face (default: {DEFAULT_PHOTO} in the shared data folder)")
    parser.add_argument("--size", type=int, default=1024, help="the photo is resized to this width and height")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    photo = args.photo or default_data_root() / DEFAULT_PHOTO
    if not photo.is_file():
        raise FewShotError(f"the benchmark photo {photo} does not exist. Fix: pass --photo PATH (a photo with one "
                           "face), or set FEWSHOT_DATA_DIR to the shared data folder.")
    torch.set_num_threads(args.threads)
    gen_path = default_generator_path()
    model = SwapModel.load(gen_path if gen_path.is_file() else None)
    if model.generator is None:
        model.generator = random_generator(GeneratorConfig(), seed=0).eval()
    config = model.generator.config
    image = F.interpolate(load_image(photo), size=(args.size, args.size), mode="bilinear", antialias=True)
    identity = model.encode_identity([image[0]])
    stages: dict[str, float] = {}
    with torch.no_grad():
        stages["detect"], dets = timed(lambda: model.detect(image)[0], args.repeats)
        faces = order_faces(dets, "largest_first")
        landmarks = faces.landmarks[:1]
        template = template_pixels(SWAP_TEMPLATE, config.resolution)

        def align():
            matrix = estimate_similarity(landmarks, template)
            return matrix, warp_to_crop(image, matrix, config.resolution)

        stages["align"], (matrix, crop) = timed(align, args.repeats)
        stages["embed"], _ = timed(lambda: model.embedder.embed_faces(image, landmarks), args.repeats)
        in_crop = transform_points(landmarks, matrix)
        stages["structure"], structure = timed(lambda: model.structure(crop, in_crop), args.repeats)
        code = identity.vector[None]
        source_px = SwapSettings.source_detail_px or config.infer_degrade_px
        stages["generate"], (rgb, mask) = timed(
            lambda: model.generator(degrade_for_inference(crop, source_px), structure, code), args.repeats)
        others: dict[str, float] = {}  # settings a user may pick instead of the default: not in the total
        if model.structure.name == "parser":
            default = SwapSettings.lock_detail
            stages["structure_lock"], _ = timed(
                lambda: model.lock_structure(rgb, mask, crop, structure, 1.0, default), args.repeats)
            for detail in (d for d in LOCK_DETAIL if d != default):
                others[f"structure_lock_{detail}"], _ = timed(
                    lambda: model.lock_structure(rgb, mask, crop, structure, 1.0, detail), args.repeats)
        refine_steps = SwapSettings.identity_refine_steps or 10
        degraded = degrade_for_inference(crop, source_px)
        refine_ms, _ = timed(lambda: refine_identity_code(model.generator, model.embedder, degraded, structure, crop,
                                                          in_crop, code, refine_steps), args.repeats)
        # the refinement ends with the render it keeps, so it replaces one 'generate', not adds to it
        (stages if SwapSettings.identity_refine_steps else others)[f"identity_refine_{refine_steps}"] = \
            refine_ms - stages["generate"]
        stages["paste_back"], _ = timed(
            lambda: paste_back(image, color_match(rgb, crop, mask), mask, matrix, 6.0), args.repeats)
        (stages if SwapSettings.photo_detail else others)["photo_detail"], _ = timed(
            lambda: photo_detail(image, crop, mask, matrix, 6.0), args.repeats)
    stages["total"] = sum(stages.values())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CPU time per stage, one face in a {args.size}x{args.size} photo, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    for name, ms in stages.items():
        print(f"  {name:12s} {ms:8.1f} ms")
    for name, ms in others.items():
        print(f"  {name:12s} {ms:8.1f} ms  (instead of the default; not in the total)")
    print(f"  peak resident memory {peak_mib:.0f} MiB; generator "
          f"{'trained' if gen_path.is_file() else 'random-weight (speed only)'}")
    summary = {"bench": "cpu_stages", "size": args.size, "threads": args.threads,
               **{f"{k}_ms": round(v, 1) for k, v in {**stages, **others}.items()}, "peak_rss_mib": round(peak_mib)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
