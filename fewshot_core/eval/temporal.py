"""`python -m fewshot_core.eval temporal`: how much a swapped video wobbles, with and without smoothing.

    python -m fewshot_core.eval temporal [--smoothing 0,0.25,0.5,0.75,1] [--threads 2]

A synthetic clip with a known answer: a window slides over one still photo (the public-domain
demo portrait), resting, panning, resting, with fresh sensor noise in every frame. In the photo's
own coordinates the face never moves, so every frame-to-frame change of its landmarks is wobble
(at rest and while panning), and the distance from their mean is offset (the detector's bias at
each window position, plus lag). All in % of the eye distance. With the shipped generator it also
measures output flicker: the mean absolute change (0-255) between consecutive outputs inside the
swapped region, after undoing the pan; FaceNet's cosine of the swapped face to the target code (with
smoothing, the identity refinement runs once per track, without it on every frame); and the time per
frame. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..demo import SOURCE, TARGETS, demo_images
from ..detect import order_faces
from ..errors import FewShotError
from ..imageio import load_image
from ..pipeline import SwapModel, SwapSettings
from ..temporal import LandmarkStabiliser
from ..weights import default_generator_path

REST, PAN = 16, 16          # frames per resting and panning segment (rest, pan, rest)
PAN_STEP = (3, 1)           # window movement per panning frame, px (x, y)
NOISE = 2.0 / 255           # sensor noise, standard deviation


def make_clip(photo: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [T, 3, h, w] cut from `photo` [1, 3, H, W], and each window's (x, y) offset [T, 2]."""
    _, _, height, width = photo.shape
    steps = [(0, 0)] * REST + [PAN_STEP] * PAN + [(0, 0)] * REST
    offsets, x, y = [], 0, 0
    for dx, dy in steps:
        x, y = x + dx, y + dy
        offsets.append((x, y))
    span_x, span_y = max(o[0] for o in offsets), max(o[1] for o in offsets)
    w, h = width - span_x, height - span_y
    generator = torch.Generator().manual_seed(seed)
    frames = torch.stack([photo[0, :, oy:oy + h, ox:ox + w] for ox, oy in offsets])
    frames = (frames + NOISE * torch.randn(frames.shape, generator=generator)).clamp(0, 1)
    return frames, torch.tensor(offsets, dtype=torch.float32)


def landmark_errors(photo_landmarks: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """In % of the eye distance, RMS over the 5 points: the frame-to-frame change (what the eye sees as
    wobble) while resting and while panning, and the distance from the face's true place (lag, bias)."""
    eye = float((truth[1] - truth[0]).norm())
    pct = lambda sq: round(100.0 * float(sq.mean().sqrt()) / eye, 2)  # noqa: E731
    change = (photo_landmarks[1:] - photo_landmarks[:-1]).norm(dim=-1).pow(2).mean(dim=-1)  # [T-1], step t-1 -> t
    rest = torch.cat([change[:REST - 1], change[REST + PAN:]])
    pan = change[REST - 1:REST + PAN]
    off = (photo_landmarks - truth).norm(dim=-1).pow(2).mean(dim=-1)
    return {"change_rest": pct(rest), "change_pan": pct(pan), "offset": pct(off)}


def flicker(outputs: torch.Tensor, masks: torch.Tensor, offsets: torch.Tensor) -> float:
    """Mean |change| (0-255) between consecutive outputs where both were swapped, with the pan undone."""
    total, count = 0.0, 0.0
    for t in range(1, outputs.shape[0]):
        dx, dy = (offsets[t] - offsets[t - 1]).long().tolist()  # the window moved by (dx, dy): shift back
        prev, cur = outputs[t - 1], outputs[t]
        pm, cm = masks[t - 1], masks[t]
        h, w = cur.shape[-2:]
        a, b = prev[:, dy:, dx:], cur[:, :h - dy, :w - dx]
        m = (pm[:, dy:, dx:] * cm[:, :h - dy, :w - dx] > 0.5).float()
        total += float(((a - b).abs() * m).sum()) / 3
        count += float(m.sum())
    return round(255.0 * total / max(count, 1.0), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.eval temporal", description=__doc__.splitlines()[0])
    parser.add_argument("--smoothing", default="0,0.25,0.5,0.75,1", help="comma-separated values in 0..1")
    parser.add_argument("--flicker-at", type=float, default=0.5, help="smoothing compared with 0 on swapped frames")
    parser.add_argument("--identity-refine-steps", type=int, default=SwapSettings.identity_refine_steps,
                        help="the swap's identity_refine_steps setting in the flicker runs")
    parser.add_argument("--no-swap", action="store_true", help="landmarks only (no generator runs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        values = [float(v) for v in args.smoothing.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--smoothing must be comma-separated numbers, got {args.smoothing!r}")
    started = time.perf_counter()
    try:
        generator = None if args.no_swap else default_generator_path()
        model = SwapModel.load(generator if generator is not None and generator.is_file() else None)
        photo = load_image(demo_images() / SOURCE)
        frames, offsets = make_clip(photo)
        detected = model.detect(frames)
        if any(len(faces) == 0 for faces in detected):
            raise FewShotError("the detector lost the face in a clip frame; the benchmark needs every frame")
        raw = torch.cat([order_faces(faces, "largest_first").landmarks[:1] for faces in detected])  # [T, 5, 2]
        truth = (raw + offsets[:, None]).mean(dim=0)          # the face does not move in the photo
        results = {}
        for value in values:
            stabiliser = LandmarkStabiliser(value)
            smoothed = torch.cat([stabiliser(lm[None]) for lm in raw])
            results[f"{value:g}"] = landmark_errors(smoothed + offsets[:, None], truth)
        summary: dict = {"eval": "temporal", "frames": int(frames.shape[0]), "pan_px_per_frame": list(PAN_STEP),
                         "eye_distance_px": round(float((truth[1] - truth[0]).norm()), 1),
                         "landmark_rms_pct_eye": results}
        print("smoothing  change at rest  change in pan  offset   (RMS, % of eye distance)")
        for key, row in results.items():
            print(f"{key:>9}  {row['change_rest']:13.2f}  {row['change_pan']:12.2f}  {row['offset']:6.2f}")
        if model.generator is not None:
            flick, cosine, seconds = {}, {}, {}
            identity = _identity(model)
            for value in sorted({0.0, args.flicker_at}):
                settings = SwapSettings(temporal_smoothing=value, order="largest_first", faces=[0],
                                        identity_refine_steps=args.identity_refine_steps)
                begun = time.perf_counter()
                out, mask = model.swap(frames, identity, settings)
                seconds[f"{value:g}"] = round((time.perf_counter() - begun) / frames.shape[0], 3)
                flick[f"{value:g}"] = flicker(out, mask, offsets)
                with torch.no_grad():  # FaceNet's reading of each swapped frame against the target code
                    read = model.embedder.embed_faces(out, raw)
                cosine[f"{value:g}"] = round(float((read @ identity.vector.to(read)).mean()), 4)
            print("output flicker (mean |change| 0-255 in the swapped region, pan undone): "
                  + ", ".join(f"smoothing {k}: {v}" for k, v in flick.items()))
            print("FaceNet cosine of the swapped face to the target, mean over frames: "
                  + ", ".join(f"smoothing {k}: {v}" for k, v in cosine.items()))
            print("swap time per frame, s: " + ", ".join(f"smoothing {k}: {v}" for k, v in seconds.items()))
            summary["flicker_0_255"] = flick
            summary["identity_cosine"] = cosine
            summary["swap_s_per_frame"] = seconds
            summary["identity_refine_steps"] = args.identity_refine_steps
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def _identity(model: SwapModel):
    """The demo's target identity (three public-domain photos of one person)."""
    folder = demo_images()
    return model.encode_identity([load_image(folder / name)[0] for name in TARGETS])


if __name__ == "__main__":
    sys.exit(main())
