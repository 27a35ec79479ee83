"""LFW 10-fold face verification of the FaceNet embedder, with our own MTCNN detection and alignment.

    python -m fewshot_core.eval.lfw [--pairs N] [--flip] [--crop {align,box}] [--model {facenet,facenet512}]

Protocol (Sandberg's validate_on_lfw): 6000 pairs in 10 folds of 300 same and
300 different pairs; for each fold the cosine threshold that is most accurate
on the other 9 folds is applied to it. Each image is embedded once per run.
The face nearest the image centre is used; where none is found a fixed central
box (LFW's typical face box) is cropped instead and counted.

`--crop align` (the default, and what `FaceEmbedder.embed_faces` does) and
Sandberg's `--crop box` measured alike on the full protocol (99.22 vs 99.28 %,
no flip); on images rolled by up to 30 degrees alignment keeps 98.9 % where the
box crop drops to 97.3 % (1000 pairs), so alignment is the shipped path.

`--model facenet512` measures the evaluation's FaceNet-512 (`fetch --eval`)
through the same detection and alignment: the behavioural check of its
conversion, since TensorFlow is not available to compare against.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..detect import FaceDetector
from ..align import warp_to_crop
from ..embed.embedder import CROP_SIZE, FACENET512_STANDARDISE, STANDARDISERS, FaceEmbedder
from ..errors import FewShotError
from ..models.fetch import require_part
from ..paths import PACKAGE_ROOT

MARGIN = 32  # Sandberg's LFW alignment: --margin 32 (source pixels, half on each side), --image_size 160
# Where LFW's 250x250 images hold the face when the detector finds none (median MTCNN box, as fractions).
FALLBACK_BOX = (0.306, 0.255, 0.680, 0.751)


def default_data_dir() -> Path:
    """`FEWSHOT_DATA_DIR`, else the shared data folder next to the project (`../shared/data`)."""
    env = os.environ.get("FEWSHOT_DATA_DIR")
    return Path(env) if env else PACKAGE_ROOT.parent.parent / "shared" / "data"


@dataclass(frozen=True)
class Pair:
    """Two LFW image paths (relative to the data folder), whether they show one person, and the fold."""

    left: str
    right: str
    same: bool
    fold: int


def _image_path(name: str, number: str) -> str:
    return f"lfw/{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse the standard pairs.txt: header `folds per_fold`, then per fold `n` same and `n` different pairs."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    folds, per_fold = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * per_fold:
        raise ValueError(f"{path}: expected {folds * 2 * per_fold} pairs after the header, found {len(body)}")
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per_fold)
        if len(parts) == 3:
            pairs.append(Pair(_image_path(parts[0], parts[1]), _image_path(parts[0], parts[2]), True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(_image_path(parts[0], parts[1]), _image_path(parts[2], parts[3]), False, fold))
        else:
            raise ValueError(f"{path}: line {i + 2} has {len(parts)} fields, expected 3 or 4")
    return pairs


def subset_pairs(pairs: list[Pair], n: int) -> list[Pair]:
    """About `n` pairs, the first n/20 same and n/20 different pairs of every fold, so 10 folds remain."""
    k = max(1, n // 20)
    out: list[Pair] = []
    for fold in sorted({p.fold for p in pairs}):
        for same in (True, False):
            out += [p for p in pairs if p.fold == fold and p.same == same][:k]
    return out


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The similarity threshold (predict 'same' above it) with the highest accuracy on these pairs."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(np.int64)
    # threshold between s[i-1] and s[i]: pairs 0..i-1 predicted different, i.. predicted same
    diff_below = np.concatenate([[0], np.cumsum(1 - y)])
    same_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = diff_below + same_above
    i = int(np.argmax(correct))
    edges = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    return float(edges[i])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold accuracy with the threshold chosen on the other folds; returns (accuracies, thresholds)."""
    accs, thrs = [], []
    for k in np.unique(folds):
        test = folds == k
        thr = best_threshold(scores[~test], same[~test])
        accs.append(float(((scores[test] > thr) == same[test]).mean()))
        thrs.append(thr)
    return np.array(accs), np.array(thrs)


def load_image(path: Path) -> torch.Tensor:
    """RGB [3, H, W] float in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def central_face(boxes: torch.Tensor, height: int, width: int) -> int | None:
    """Index of the box whose centre is nearest the image centre (pixel-centre coordinates)."""
    if boxes.shape[0] == 0:
        return None
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=boxes.dtype)
    mid = (boxes[:, :2] + boxes[:, 2:]) / 2
    return int(((mid - centre) ** 2).sum(1).argmin())


def margin_box(box: torch.Tensor, height: int, width: int, margin: float = MARGIN) -> tuple[int, int, int, int]:
    """Sandberg's crop window: the box (pixel-centre coords) grown by margin/2 a side, clipped, truncated
    to integers; returned as corner coordinates [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = (box + 0.5).tolist()  # corner coordinates, as his numpy slicing uses
    return (int(max(x0 - margin / 2, 0)), int(max(y0 - margin / 2, 0)),
            int(min(x1 + margin / 2, width)), int(min(y1 + margin / 2, height)))


def window_affine(window: tuple[int, int, int, int], size: int = CROP_SIZE) -> torch.Tensor:
    """[2, 3] image px -> crop px that resizes the window (corner coordinates) onto a size x size crop."""
    x0, y0, x1, y1 = window
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return torch.tensor([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])


def fallback_window(height: int, width: int) -> tuple[int, int, int, int]:
    """The margin window around LFW's typical face box, for images where no face was found."""
    box = torch.tensor([FALLBACK_BOX[0] * width, FALLBACK_BOX[1] * height,
                        FALLBACK_BOX[2] * width, FALLBACK_BOX[3] * height]) - 0.5
    return margin_box(box, height, width)


@dataclass
class Face:
    """The face chosen in one image: box [4] and landmarks [5, 2] (pixel-centre coordinates), or none."""

    box: torch.Tensor | None
    landmarks: torch.Tensor | None


def detect_central_faces(detector: FaceDetector | None, images: list[torch.Tensor]) -> list[Face]:
    """The face nearest the centre of each image (batched when sizes agree); None where none is found."""
    if detector is None:
        return [Face(None, None) for _ in images]
    out: list[Face | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(tuple(img.shape[-2:]), []).append(i)
    for (h, w), idx in by_size.items():
        dets = detector.detect(torch.stack([images[i] for i in idx]))
        for i, d in zip(idx, dets):
            j = central_face(d.boxes, h, w)
            out[i] = Face(None, None) if j is None else Face(d.boxes[j], d.landmarks[j])
    return out  # type: ignore[return-value]


def crop_faces(embedder: FaceEmbedder, images: list[torch.Tensor], faces: list[Face], crop: str) -> torch.Tensor:
    """FaceNet crops [N, 3, 160, 160]: 5-point alignment ('align') or Sandberg's box + margin ('box')."""
    crops = []
    for img, face in zip(images, faces):
        h, w = img.shape[-2:]
        if face.box is None:
            M = window_affine(fallback_window(h, w))
        elif crop == "align":
            M = embedder.crop_affines(face.landmarks[None])[0]
        else:
            M = window_affine(margin_box(face.box, h, w))
        crops.append(warp_to_crop(img[None], M[None].to(img), CROP_SIZE))
    return torch.cat(crops)


def embed_images(
    paths: list[Path], embedder: FaceEmbedder, detector: FaceDetector | None, crop: str, batch: int = 16,
    mirror: bool = False, log_every: int = 500,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Unit embeddings [N, D] of the central face of each image, of its mirrored crop (if `mirror`),
    and how many images had no face. Flip averaging is normalize(plain + mirrored), as
    `FaceEmbedder(flip=True)` computes it, so one run measures both."""
    plain, mirrored, no_face, start = [], [] if mirror else None, 0, time.time()
    for b in range(0, len(paths), batch):
        images = [load_image(p) for p in paths[b:b + batch]]
        faces = detect_central_faces(detector, images)
        no_face += sum(f.box is None for f in faces)
        with torch.inference_mode():
            crops = crop_faces(embedder, images, faces, crop)
            plain.append(embedder.embed_crops(crops))
            if mirrored is not None:
                mirrored.append(embedder.embed_crops(crops.flip(-1)))
        done = b + len(images)
        if log_every and (done // log_every) != ((done - len(images)) // log_every):
            print(f"  {done}/{len(paths)} images, {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return torch.cat(plain), (torch.cat(mirrored) if mirrored is not None else None), no_face


def landmark_fractions(face: Face, height: int, width: int) -> torch.Tensor:
    """Landmarks [5, 2] as fractions of Sandberg's box + margin window (0 = window's left/top edge)."""
    x0, y0, x1, y1 = margin_box(face.box, height, width)
    corner = face.landmarks + 0.5  # pixel-centre -> corner coordinates, as the window's
    return torch.stack([(corner[:, 0] - x0) / (x1 - x0), (corner[:, 1] - y0) / (y1 - y0)], dim=1)


def measure_template(detector: FaceDetector, data: Path, count: int, exclude: set[str]) -> tuple[torch.Tensor, int]:
    """Mean landmark fractions inside box + margin windows over `count` LFW images outside `exclude`
    (evenly spaced in name order): the 5-point template that reproduces Sandberg's crop on average."""
    names = sorted(str(p.relative_to(data)) for p in (data / "lfw").glob("*/*.jpg"))
    names = [n for n in names if n not in exclude]
    names = names[:: max(1, len(names) // count)][:count]
    fractions = []
    for b in range(0, len(names), 16):
        images = [load_image(data / n) for n in names[b:b + 16]]
        for img, face in zip(images, detect_central_faces(detector, images)):
            if face.box is not None:
                fractions.append(landmark_fractions(face, *img.shape[-2:]))
    return torch.stack(fractions).mean(0), len(fractions)


def main(argv: list[str] | None = None) -> int:
    """CLI entry; prints the report and, as its last line, a JSON summary. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.eval.lfw", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=0, help="use about N pairs spread over the 10 folds (0: all 6000)")
    parser.add_argument("--flip", action="store_true",
                        help="average the embeddings of each crop and its mirror (also reports the plain accuracy)")
    parser.add_argument("--crop", choices=("align", "box"), default="align",
                        help="5-point similarity alignment onto FACENET_TEMPLATE (default), "
                             "or Sandberg's MTCNN box + 32 px margin")
    parser.add_argument("--no-detect", action="store_true", help="skip detection: fixed central crop for every image")
    parser.add_argument("--model", choices=("facenet", "facenet512"), default="facenet",
                        help="the generator's 128-D FaceNet (default) or the evaluation's FaceNet-512")
    parser.add_argument("--standardise", choices=sorted(STANDARDISERS), default=None,
                        help="pixel standardisation (default: prewhiten for facenet, "
                             f"{FACENET512_STANDARDISE} for facenet512)")
    parser.add_argument("--data", type=Path, default=None, help="folder holding lfw/ and lfw_pairs.txt")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder of the converted model files (default: the model folder)")
    parser.add_argument("--measure-template", type=int, default=0, metavar="N",
                        help="instead: print FACENET_TEMPLATE measured on N LFW images outside the pairs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = args.data or default_data_dir()
    if not (data / "lfw_pairs.txt").is_file():
        print(f"No LFW data at {data} (lfw_pairs.txt and lfw/); pass --data or set FEWSHOT_DATA_DIR.", file=sys.stderr)
        return 2
    all_pairs = read_pairs(data / "lfw_pairs.txt")
    pairs = subset_pairs(all_pairs, args.pairs) if args.pairs else all_pairs
    names = sorted({p.left for p in pairs} | {p.right for p in pairs})
    if args.measure_template:
        try:
            detector = FaceDetector.from_file(require_part("mtcnn", args.models))
        except FewShotError as exc:
            print(exc, file=sys.stderr)
            return 2
        exclude = {p.left for p in all_pairs} | {p.right for p in all_pairs}
        template, found = measure_template(detector, data, args.measure_template, exclude)
        print(f"mean landmark positions in box + {MARGIN} px margin windows, {found} faces:")
        for (x, y), what in zip(template.tolist(), ("left eye", "right eye", "nose", "mouth left", "mouth right")):
            print(f"        [{x:.4f}, {y:.4f}],  # {what}")
        rounded = [[round(v, 4) for v in r] for r in template.tolist()]
        summary = {"benchmark": "lfw_template", "faces": found, "template": rounded}
        print(json.dumps(summary))
        return 0

    try:
        if args.model == "facenet512":
            embedder = FaceEmbedder.facenet512(require_part("facenet512", args.models),
                                               standardise=args.standardise or FACENET512_STANDARDISE)
        else:
            embedder = FaceEmbedder.from_file(require_part("facenet", args.models))
            embedder.standardise = args.standardise or embedder.standardise
        detector = None if args.no_detect else FaceDetector.from_file(require_part("mtcnn", args.models))
    except FewShotError as exc:
        print(exc, file=sys.stderr)
        return 2
    start = time.time()
    plain, mirrored, no_face = embed_images(
        [data / n for n in names], embedder, detector, args.crop, args.batch, mirror=args.flip
    )
    seconds = time.time() - start
    variants = {"plain": plain}
    if mirrored is not None:
        variants["flip"] = F.normalize(plain + mirrored, dim=1)
    row = {n: i for i, n in enumerate(names)}
    left, right = [row[p.left] for p in pairs], [row[p.right] for p in pairs]
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    results = {}
    for name, embs in variants.items():
        scores = (embs[left] * embs[right]).sum(1).numpy()
        results[name] = kfold_accuracy(scores, same, folds)

    crop = "center" if detector is None else args.crop
    print(f"LFW verification, {len(pairs)} pairs, {len(names)} images, crop={crop}, model={args.model} "
          f"({embedder.embedding_dim}-D, {embedder.standardise})")
    for name, (accs, thrs) in results.items():
        print(f"{'with flip' if name == 'flip' else 'no flip  '}: accuracy {accs.mean() * 100:.2f} +- "
              f"{accs.std() * 100:.2f} % (10 folds; cosine threshold {thrs.mean():.3f} +- {thrs.std():.3f})")
    print(f"no face found in {no_face} of {len(names)} images (central crop used)")
    print(f"{seconds:.0f} s, {seconds / len(names) * 1000:.0f} ms per image (detect + align + embed)")
    accs, thrs = results["flip" if args.flip else "plain"]
    summary = {
        "benchmark": "lfw", "model": args.model, "standardise": embedder.standardise,
        "pairs": len(pairs), "images": len(names), "crop": crop, "flip": args.flip,
        "accuracy_mean": round(float(accs.mean()), 5), "accuracy_std": round(float(accs.std()), 5),
        "threshold_mean": round(float(thrs.mean()), 4), "no_face": no_face, "seconds": round(seconds, 1),
    }
    if args.flip:
        summary["accuracy_noflip_mean"] = round(float(results["plain"][0].mean()), 5)
        summary["accuracy_noflip_std"] = round(float(results["plain"][0].std()), 5)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
