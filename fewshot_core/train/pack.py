"""Pack the training crops compactly for a bounded GPU slot, and unpack them there.

    python -m fewshot_core.train.pack --out pack.npz [--max-mib 50] [--quality 80]
    python -m fewshot_core.train.pack --unpack pack.npz --into DIR

Only training identities travel (never held-out ones). Crops are WebP, class
maps are zlib-compressed inside the npz; if everything does not fit under the
cap, a seeded subset that keeps whole identities is taken.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .prepare import prepared_dir


def encode_webp(crop: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def load_train_rows(folder: Path) -> dict[str, np.ndarray]:
    """Training rows of every shard, with their MediaPipe class maps when labelled."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("crops", "landmarks", "embeddings", "identities",
                                                             "class_maps", "found", "iris_centres")}
    for shard in sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz")):
        with np.load(shard) as data:
            keep = ~data["heldout"]
            for key in ("crops", "landmarks", "embeddings", "identities"):
                columns[key].append(data[key][keep])
            labels = folder / "labels" / shard.name
            if labels.is_file():
                with np.load(labels) as lab:
                    columns["class_maps"].append(lab["class_maps"][keep])
                    columns["found"].append(lab["found"][keep])
                    columns["iris_centres"].append(lab["iris_centres"][keep].astype(np.float16))
            else:
                side = data["crops"].shape[1]
                columns["class_maps"].append(np.full((int(keep.sum()), side, side), 255, np.uint8))
                columns["found"].append(np.zeros(int(keep.sum()), bool))
                columns["iris_centres"].append(np.zeros((int(keep.sum()), 2, 2), np.float16))
    return {k: np.concatenate(v) for k, v in columns.items()}


def pack(folder: Path, out: Path, max_mib: float = 50.0, quality: int = 80, seed: int = 0) -> dict:
    rows = load_train_rows(folder)
    blobs = [encode_webp(crop, quality) for crop in rows["crops"]]
    sizes = np.array([len(b) for b in blobs])
    # Estimated bytes per row: the WebP, plus ~ the compressed map and the small arrays.
    per_row = sizes + 900 + 128 * 2 + 40
    order = np.random.default_rng(seed).permutation(len(blobs))
    budget = max_mib * 1024 * 1024 * 0.97
    keep = order[np.cumsum(per_row[order]) <= budget]
    keep.sort()
    offsets = np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64)
    np.savez_compressed(
        out, webp=np.frombuffer(b"".join(blobs[i] for i in keep), dtype=np.uint8), offsets=offsets,
        landmarks=rows["landmarks"][keep], embeddings=rows["embeddings"][keep].astype(np.float16),
        identities=rows["identities"][keep], class_maps=rows["class_maps"][keep], found=rows["found"][keep],
        iris_centres=rows["iris_centres"][keep],
    )
    summary = {"rows": int(len(keep)), "of": int(len(blobs)), "mib": round(out.stat().st_size / 2**20, 2),
               "quality": quality}
    if summary["mib"] > max_mib:
        raise SystemExit(f"pack is {summary['mib']} MiB, over the {max_mib} MiB cap: lower --quality")
    return summary


def unpack(pack_path: Path, into: Path) -> dict:
    """Write the pack back as prepared shards (+ labels) that the trainer reads."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "labels").mkdir(exist_ok=True)
    with np.load(pack_path) as data:
        webp, offsets = data["webp"].tobytes(), data["offsets"]
        crops = np.stack([np.asarray(Image.open(io.BytesIO(webp[offsets[i]:offsets[i + 1]])).convert("RGB"))
                          for i in range(len(offsets) - 1)])
        n = len(crops)
        np.savez(into / "packed_0000.npz", crops=crops, landmarks=data["landmarks"],
                 embeddings=data["embeddings"], paths=np.array([f"packed/{i}" for i in range(n)]),
                 identities=data["identities"], heldout=np.zeros(n, bool), no_face=np.array([], dtype=str),
                 several_faces=np.array(0))
        iris = (data["iris_centres"].astype(np.float32) if "iris_centres" in data.files  # packs from before iris
                else np.zeros((n, 2, 2), np.float32))
        np.savez(into / "labels" / "packed_0000.npz", class_maps=data["class_maps"], found=data["found"],
                 iris_centres=iris)
    return {"rows": n, "into": str(into)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.train.pack")
    parser.add_argument("--prepared", type=Path, default=prepared_dir(128))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--max-mib", type=float, default=50.0)
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--unpack", type=Path)
    parser.add_argument("--into", type=Path)
    args = parser.parse_args(argv)
    if args.unpack:
        summary = unpack(args.unpack, args.into or prepared_dir(128))
    else:
        summary = pack(args.prepared, args.out or Path("pack.npz"), args.max_mib, args.quality)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
