"""`python -m fewshot_core.train.plot RUN_DIR --out docs/training_curve.png`: losses against images seen.

Drawn with PIL (no plotting dependency): one panel per loss, each scaled to its own range.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

LOSSES = ("l1", "perceptual", "id", "id_cross", "struct", "cycle", "mask", "adv_g", "adv_d", "total")


def read_log(path: Path) -> list[dict[str, float]]:
    rows = []
    for row in csv.DictReader(open(path)):
        rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def plot(rows: list[dict[str, float]], out: Path, panel: tuple[int, int] = (360, 170)) -> Path:
    names = [n for n in LOSSES if any(n in r for r in rows)]
    cols = 2
    width, height = panel
    image = Image.new("RGB", (cols * width, ((len(names) + 1) // cols) * height), "white")
    draw = ImageDraw.Draw(image)
    seen_max = max(r["images_seen"] for r in rows)
    for i, name in enumerate(names):
        x0, y0 = (i % cols) * width, (i // cols) * height
        points = [(r["images_seen"], r[name]) for r in rows if name in r]
        low, high = min(p[1] for p in points), max(p[1] for p in points)
        span = (high - low) or 1.0
        left, top, right, bottom = x0 + 44, y0 + 22, x0 + width - 10, y0 + height - 24
        draw.rectangle([left, top, right, bottom], outline=(180, 180, 180))
        xy = [(left + (s / seen_max) * (right - left), bottom - (v - low) / span * (bottom - top)) for s, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=(30, 90, 200), width=1)
        draw.text((left, y0 + 5), f"{name}: {points[-1][1]:.3f} (range {low:.3f}..{high:.3f})", fill="black")
        draw.text((left, bottom + 6), f"images seen 0 .. {int(seen_max)}", fill=(90, 90, 90))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.train.plot")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/training_curve.png"))
    args = parser.parse_args(argv)
    rows = read_log(args.run_dir / "losses.csv")
    plot(rows, args.out)
    last = rows[-1]
    print(json.dumps({"curve": str(args.out), "rows": len(rows), "step": int(last["step"]),
                      "images_seen": int(last["images_seen"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
