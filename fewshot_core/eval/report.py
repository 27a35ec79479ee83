"""Presenting the swap evaluation: text table, markdown page, PNG grid.

Why a separate module: the numbers (swap.py) and how they are shown change
for different reasons; this module only formats plain dicts and images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .expression import LANDMARK_REGIONS

REALISM_LABEL = "Fréchet distance in FaceNet-512 (CASIA-WebFace) feature space (a proxy, not FID)"
REALISM_LABEL_DLIB = ("Fréchet distance in dlib descriptor space (FaceNet-512 not fetched: "
                      "python -m fewshot_core.models fetch --eval) (a proxy, not FID)")
REALISM_LABEL_DLIB_CHOSEN = "Fréchet distance in dlib descriptor space (--realism dlib) (a proxy, not FID)"


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    fmt: Callable[[object], str]


def _pct(v: object) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def _num(digits: int) -> Callable[[object], str]:
    return lambda v: "n/a" if v is None else f"{float(v):.{digits}f}"


def _text(v: object) -> str:
    return "-" if v is None else str(v)


COLUMNS = [
    Column("method", "method", _text), Column("K", "k", _text), Column("n", "n", _text),
    Column("face", "detected", _pct), Column("top-1", "top1", _pct), Column("top-5", "top5", _pct),
    Column("cos>tgt", "cos_tgt", _num(3)), Column("cos>src", "cos_src", _num(3)),
    Column("dist>tgt", "dist_tgt", _num(3)), Column("dist>src", "dist_src", _num(3)),
    Column("pose deg", "pose_deg", _num(1)), Column("expr", "expr", _num(3)),
    Column("gaze", "gaze", _num(3)), Column("FD*", "fd", _num(3)),
]
FAIR_COLUMNS = [Column("group", "group", _text)] + [c for c in COLUMNS if c.key not in ("top5", "k")]
REGION_COLUMNS = [Column("method", "method", _text), Column("K", "k", _text), Column("expr", "expr", _num(4))] + [
    Column(region, f"expr_{region}", _num(4)) for region in LANDMARK_REGIONS]
REGION_HEADING = "Expression error by landmark region"
REGION_NOTE = ("One similarity alignment over all 68 points, then the mean distance per group ("
               + ", ".join(f"{name} {part.start}-{part.stop - 1}" for name, part in LANDMARK_REGIONS.items())
               + "), over the source's inter-ocular distance. Jaw and nose "
               "follow face shape, which a swap should take from the target and a classical warp keeps from the "
               "source; brows, eyes and mouth carry most of the expression.")


def region_rows(rows: Sequence[Mapping]) -> list[Mapping]:
    """The rows that have a per-region expression split worth showing: the swappers, not the baselines."""
    return [r for r in rows if r.get("expr_jaw") is not None and r.get("method") not in ("no swap", "upper bound")]

COLUMN_NOTES = (
    "* face: outputs in which dlib's HOG detector still finds a face; the other columns average over those "
    "(top-1/top-5 count an undetected output as a miss).",
    "* top-1 / top-5: the target identity is the nearest / among the 5 nearest gallery identities "
    "(cosine to each identity's mean unit descriptor over photos never used as shots, probes or sources).",
    "* cos>tgt, cos>src: cosine similarity of the output's dlib descriptor to the target's / the source "
    "person's gallery mean (higher = closer). dist>tgt, dist>src: dlib's Euclidean distance to the same "
    "means (lower = closer; dlib calls < 0.6 the same person).",
    "* pose deg: mean |yaw, pitch, roll| difference to the source (68-landmark PnP); expr: mean landmark "
    "distance after similarity alignment, over the source's inter-ocular distance (includes face shape, "
    "so compare methods, not absolutes)",
    "* FD*: {realism}, between the outputs and the real gallery photos. 'no swap' (real photos, same "
    "sample size) is the reference. {features} Face-recogniser features encode identity, so the proxy also "
    "grows when a set holds few distinct people: the upper bound repeats one probe per target and the swaps "
    "carry only the targets' identities. Compare swappers with each other at equal n, not with the baselines' "
    "absolute values.",
)
FEATURES_NOTES = {
    REALISM_LABEL: "FaceNet-512 (Sandberg's 20180408-102900, unit embeddings) is a recogniser the generator never "
                   "trains with (it trains with the 128-D FaceNet); faces are aligned onto FaceNet's 5-point "
                   "template using points from dlib's 68 landmarks.",
}


def _rows_text(rows: Sequence[Mapping], columns: Sequence[Column]) -> list[list[str]]:
    return [[c.fmt(r.get(c.key)) for c in columns] for r in rows]


def format_table(rows: Sequence[Mapping], columns: Sequence[Column] = COLUMNS) -> str:
    """Fixed-width text table for the terminal."""
    cells = _rows_text(rows, columns)
    widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    out = [line([c.header for c in columns]), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(r) for r in cells])


def column_notes(gaze_from: str | None, realism: str = REALISM_LABEL) -> tuple[str, ...]:
    """The notes under the results table; the gaze note names where iris centres come from, the FD* note
    which features the realism proxy used."""
    gaze = ("gaze: mean distance between the source's and the output's iris offsets, each eye in its corner "
            "frame (unit: half the corner-to-corner width), iris centres from the " + gaze_from +
            " on a crop aligned on dlib's landmarks") if gaze_from else \
        "gaze: n/a (no face parser with iris output, weights/parser_128.safetensors, was found)"
    fd = COLUMN_NOTES[4].format(realism=realism, features=FEATURES_NOTES.get(
        realism, "dlib also judges identity here, so FD* shares the identity columns' judge."))
    return COLUMN_NOTES[:3] + (COLUMN_NOTES[3] + f"; {gaze}.", fd)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[Column] = COLUMNS) -> str:
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(r) + " |" for r in _rows_text(rows, columns)]
    return "\n".join([head, rule] + body)


FAIRNESS_HEADING = "Fairness: UTKFace race groups (1 shot)"
GENERATED_HEADINGS = frozenset({"Protocol", "Results", REGION_HEADING, FAIRNESS_HEADING, "Examples", "Timing"})


def markdown_report(*, command: str, date: str, status: str, protocol: Sequence[str],
                    rows: Sequence[Mapping], fair_rows: Sequence[Mapping] | None,
                    fair_notes: Sequence[str], timing: Sequence[str], grid: str | None,
                    gaze_from: str | None = None, realism: str = REALISM_LABEL) -> str:
    """The generated part of docs/EVALUATION.md (`keep_extra_sections` adds hand-written ones)."""
    parts = [
        "# Swap evaluation",
        "",
        f"Generated by `{command}` on {date}. Regenerate with the same command; the pairs are fixed by the seed.",
        "",
        status,
        "",
        "## Protocol",
        "",
        *[f"- {p}" for p in protocol],
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        *column_notes(gaze_from, realism),
    ]
    regions = region_rows(rows)
    if regions:
        parts += ["", f"## {REGION_HEADING}", "", markdown_table(regions, REGION_COLUMNS), "", REGION_NOTE]
    if fair_rows is not None:
        parts += ["", f"## {FAIRNESS_HEADING}", "", markdown_table(fair_rows, FAIR_COLUMNS),
                  "", *[f"* {n}" for n in fair_notes]]
    if grid:
        parts += ["", "## Examples", "",
                  f"`--write-docs` also writes `docs/{grid}` (rows: source photos; columns: target identities "
                  "with their shots above; cells: the output). It is not committed: it shows photos from the "
                  "shared data, and nothing derived from them but trained weights goes into git."]
    parts += ["", "## Timing", "", *[f"- {t}" for t in timing], ""]
    return "\n".join(parts)


def _sections(page: str) -> list[tuple[str, str]]:
    """(heading, text) of each `## ` section of a markdown page, in order."""
    out: list[tuple[str, str]] = []
    for block in ("\n" + page).split("\n## ")[1:]:
        heading = block.split("\n", 1)[0].strip()
        out.append((heading, "## " + block.rstrip() + "\n"))
    return out


def keep_extra_sections(new_page: str, old_page: str | None) -> str:
    """`new_page` plus the hand-written `## ` sections of `old_page` (any heading this module never writes).

    A generated section of an older run (say the fairness table of a run with
    --fairness) is dropped, so no stale number survives a rewrite.
    """
    if not old_page:
        return new_page
    extra = [text for h, text in _sections(old_page) if h not in GENERATED_HEADINGS]
    return new_page.rstrip() + "\n" + "".join("\n" + t for t in extra) if extra else new_page


# --- the PNG grid -----------------------------------------------------------------

def face_crop(rgb: np.ndarray, box: tuple[int, int, int, int] | None, scale: float = 1.8) -> np.ndarray:
    """A square crop `scale` times the face box around its centre (the whole image when no box)."""
    if box is None:
        return rgb
    l, t, r, b = box
    cx, cy, half = (l + r) / 2, (t + b) / 2, scale * max(r - l, b - t) / 2
    h, w = rgb.shape[:2]
    x0, y0 = int(round(max(cx - half, 0))), int(round(max(cy - half, 0)))
    x1, y1 = int(round(min(cx + half, w))), int(round(min(cy + half, h)))
    return rgb[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else rgb


def _thumb(rgb: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(rgb).resize((size, size), Image.BICUBIC)


def _shots_tile(shots: Sequence[np.ndarray], cell: int, highlight: int | None = None) -> Image.Image:
    """All of a target's shots in one cell: up to 3 per row, 2 rows; `highlight` gets a red frame."""
    tile = Image.new("RGB", (cell, cell), "white")
    per_row = 1 if len(shots) == 1 else min(3, (len(shots) + 1) // 2)
    rows = (len(shots) + per_row - 1) // per_row
    size = min(cell // per_row, cell // rows)
    y0 = (cell - rows * size) // 2
    draw = ImageDraw.Draw(tile)
    for i, s in enumerate(shots):
        x, y = (i % per_row) * size, y0 + (i // per_row) * size
        tile.paste(_thumb(s, size), (x, y))
        if i == highlight:
            draw.rectangle((x, y, x + size - 1, y + size - 1), outline=(220, 0, 0), width=2)
    return tile


def grid_image(sources: Sequence[np.ndarray], target_shots: Sequence[Sequence[np.ndarray]],
               cells: Sequence[Sequence[np.ndarray | None]], title: str, cell: int = 104,
               gap: int = 4, highlight: Sequence[int | None] | None = None) -> Image.Image:
    """Rows = sources, columns = targets (their shots in the header row), cells = outputs.

    `highlight[c]` frames the shot a column's swaps used (the classical baseline
    uses one); a cell with no output (the swap failed) is left grey.
    """
    font = ImageFont.load_default()
    title_h = 18
    cols, rows = len(target_shots) + 1, len(sources) + 1
    w = cols * cell + (cols - 1) * gap
    h = title_h + rows * cell + (rows - 1) * gap
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((2, 3), title, fill="black", font=font)
    draw.text((4, title_h + cell // 2 - 6), "source \\ target", fill="black", font=font)
    at = lambda r, c: (c * (cell + gap), title_h + r * (cell + gap))  # noqa: E731
    for c, shots in enumerate(target_shots):
        img.paste(_shots_tile(shots, cell, highlight[c] if highlight else None), at(0, c + 1))
    for r, src in enumerate(sources):
        img.paste(_thumb(src, cell), at(r + 1, 0))
        for c in range(len(target_shots)):
            out = cells[r][c]
            img.paste(_thumb(out, cell) if out is not None else Image.new("RGB", (cell, cell), (128, 128, 128)),
                      at(r + 1, c + 1))
    return img


def save_png_under(img: Image.Image, path: Path, max_bytes: int = 300_000) -> int:
    """Write a PNG no larger than `max_bytes`: full colour, else a 256-colour palette, else smaller."""
    candidate = img
    for _ in range(8):
        for version in (candidate, candidate.quantize(256, method=Image.Quantize.MEDIANCUT)):
            buf = io.BytesIO()
            version.save(buf, format="PNG", optimize=True)
            if buf.tell() <= max_bytes:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_bytes(buf.getvalue())
                return buf.tell()
        candidate = candidate.resize((int(candidate.width * 0.85), int(candidate.height * 0.85)), Image.LANCZOS)
    raise ValueError(f"could not fit the grid into {max_bytes} bytes")
