"""`fewshot-swap`: the swap outside ComfyUI.

    fewshot-swap --source S.jpg --targets a.jpg b.jpg --out O.png
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from .errors import FewShotError, ModelFileMissingError
from .identity import load_identity, save_identity
from .imageio import load_image, make_row, save_image
from .pipeline import SwapModel, SwapSettings, parse_face_indices
from .skin_tone import SHIFT_CHANNELS
from .structure_lock import LOCK_DETAIL
from .temporal import LandmarkStabiliser
from .weights import default_generator_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot-swap", description=__doc__.split("\n")[1])
    parser.add_argument("--source", type=Path, nargs="+", required=True, help="image(s) whose faces are replaced")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--targets", type=Path, nargs="+", help="1-5 photos of the person whose identity to use")
    who.add_argument("--identity", type=Path, help="an identity file saved with --save-identity")
    parser.add_argument("--out", type=Path, required=True, help="output image (or folder for several sources)")
    parser.add_argument("--generator", type=Path, default=None, help=f"generator weights (default {default_generator_path()})")
    parser.add_argument("--save-identity", type=Path, help="also save the encoded identity here")
    parser.add_argument("--faces", default="all", help="'all' or indices like '0,2'")
    parser.add_argument("--order", choices=["left_to_right", "largest_first"], default="left_to_right")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--feather", type=float, default=6.0)
    parser.add_argument("--no-color-match", action="store_true")
    parser.add_argument("--temporal-smoothing", type=float, default=0.0,
                        help="0..1: the sources are frames of one video, in order; steadies each face's alignment "
                             "and refines its identity on its first frame only")
    parser.add_argument("--structure-lock", type=float, default=SwapSettings.structure_lock,
                        help="0..1: warp the generated parts onto the source's (keeps expression; 0 off)")
    parser.add_argument("--lock-detail", choices=sorted(LOCK_DETAIL), default=SwapSettings.lock_detail,
                        help="the structure lock's resolution: fine also moves parts' outlines (more of the "
                             "source's expression, a little less of the target's face shape)")
    parser.add_argument("--source-detail-px", type=int, default=SwapSettings.source_detail_px,
                        help="size the source face reaches the generator at (0: the generator's own setting; "
                             "larger keeps more of the source's expression and lighting, less of the target)")
    parser.add_argument("--photo-detail", type=float, default=SwapSettings.photo_detail,
                        help="0..1: lay the source photo's fine detail (grain, sharp edges, skin texture), which "
                             "the 128 px generator cannot draw, back over the swapped face (sharper on large faces; "
                             "carries some of the source's identity)")
    parser.add_argument("--identity-refine-steps", type=int, default=SwapSettings.identity_refine_steps,
                        help="gradient steps on the identity code so the rendered face carries the target more "
                             "strongly (0 off; about 0.12 s per step and face on 2 CPU cores)")
    parser.add_argument("--target-skin-tone", type=float, default=SwapSettings.target_skin_tone,
                        help="0..1 (with the colour match on): 0 keeps the source's skin tone, 1 takes the target "
                             "photos'")
    parser.add_argument("--skin-tone-channels", choices=sorted(SHIFT_CHANNELS),
                        default=SwapSettings.skin_tone_channels,
                        help="what --target-skin-tone moves: colour only, or colour and lightness")
    parser.add_argument("--mask-out", type=Path, help="also write the mask of what was replaced")
    parser.add_argument("--grid", type=Path, help="also write a before/after grid with the target photos")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def run(args: argparse.Namespace) -> dict:
    generator = args.generator or default_generator_path()
    if not generator.is_file():
        raise ModelFileMissingError(
            f"Generator weights {generator} not found, so no swap can be made. The shipped generator lives in "
            f"the repository's weights/ folder; pass another with --generator PATH.")
    model = SwapModel.load(generator, device=args.device)
    if args.identity:
        identity = load_identity(args.identity)
        target_photos = []
    else:
        target_photos = [load_image(p) for p in args.targets]
        identity = model.encode_identity([p[0] for p in target_photos])
    print(identity.report())
    if args.save_identity:
        save_identity(identity, args.save_identity)
    settings = SwapSettings(faces=parse_face_indices(args.faces), order=args.order, strength=args.strength,
                            feather_px=args.feather, color_match=not args.no_color_match,
                            structure_lock=args.structure_lock, lock_detail=args.lock_detail,
                            source_detail_px=args.source_detail_px, photo_detail=args.photo_detail,
                            identity_refine_steps=args.identity_refine_steps, target_skin_tone=args.target_skin_tone,
                            skin_tone_channels=args.skin_tone_channels)
    # one stabiliser for all sources: they are frames of one video, swapped one call at a time
    stabiliser = LandmarkStabiliser(args.temporal_smoothing) if args.temporal_smoothing > 0 else None
    written = []
    for index, source_path in enumerate(args.source):
        source = load_image(source_path)
        out, mask = model.swap(source, identity, settings, stabiliser=stabiliser)
        target = args.out if len(args.source) == 1 else args.out / f"{source_path.stem}_swapped.png"
        written.append(str(save_image(out, target)))
        if args.mask_out:
            mask_target = args.mask_out if len(args.source) == 1 else args.mask_out / f"{source_path.stem}_mask.png"
            save_image(mask.expand(-1, 3, -1, -1), mask_target)
        if args.grid and index == 0:
            save_image(make_row([source, out, *target_photos]), args.grid)
    return {"outputs": written, "outliers": identity.outliers}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
