"""The committed identity-level train / held-out split of the shared face data.

Why: a swap model is judged on people it never saw, so every measurement must
use the same held-out identities, split by identity and never by image. The
split lives in two text files inside the package (`fewshot_core/data/`):

* `heldout_identities.txt`: `lfw/NAME` and `celeba/ID` lines. Among the
  identities with at least `MIN_PHOTOS` photos (so each held-out person gives
  reference photos *and* probes), `HELDOUT_FRACTION` of them are held out,
  chosen by ranking sha256(seed + identity), which is stable across machines,
  Python and numpy versions. Every other identity, including every one with
  fewer photos, is for training.
* `heldout_utkface.txt`: UTKFace has no identity labels, so it cannot be split
  by identity. We train on it for self-reconstruction only, except a fixed
  slice of `UTK_PER_GROUP` filenames per race group that is held out for the
  fairness table. The rest of UTKFace is train-only. (A held-out UTKFace photo
  may show a person who also appears in the training slice; the dataset is
  "mostly distinct" people, and the fairness table measures per-group quality,
  not generalisation to new people.)

`generate_*` recompute the lists from the data; tests check that they equal
the committed files, so the split cannot drift silently.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from ..errors import FewShotError

SEED = "fewshot-swap-split-v1"
MIN_PHOTOS = 6
HELDOUT_FRACTION = 0.18
UTK_PER_GROUP = 200
UTK_GROUPS = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}

DATA_FILES = Path(__file__).resolve().parent.parent / "data"
HELDOUT_IDENTITIES_FILE = DATA_FILES / "heldout_identities.txt"
HELDOUT_UTKFACE_FILE = DATA_FILES / "heldout_utkface.txt"


class DataSplitError(FewShotError):
    """The shared face data or the split files are missing or malformed."""


def default_data_root() -> Path:
    """`FEWSHOT_DATA_DIR` if set, else `../shared/data` next to the project root."""
    env = os.environ.get("FEWSHOT_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _rank_key(identity: str) -> str:
    return hashlib.sha256(f"{SEED}:{identity}".encode()).hexdigest()


def _pick(identities: list[str], count: int) -> list[str]:
    return sorted(sorted(identities, key=_rank_key)[:count])


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataSplitError(f"Split file {path} is missing; regenerate it with "
                             "`python -m fewshot_core.eval.split write`.")
    lines = (ln.strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def check_data_root(root: Path) -> Path:
    """`root` itself, once it is known to hold the shared face data; else a DataSplitError with the fix."""
    root = Path(root)
    if not (root / "lfw").is_dir() or not (root / "celeba299" / "identities.csv").is_file():
        raise DataSplitError(f"No face data at {root} (expected lfw/ and celeba299/identities.csv). Fix: pass "
                             "--data DIR or set FEWSHOT_DATA_DIR to the shared data folder.")
    return root


def lfw_photo_counts(root: Path) -> dict[str, int]:
    """`lfw/NAME` -> number of photos."""
    lfw = check_data_root(root) / "lfw"
    return {f"lfw/{d.name}": sum(1 for f in d.iterdir() if f.suffix.lower() == ".jpg")
            for d in sorted(lfw.iterdir()) if d.is_dir()}


@lru_cache(maxsize=4)
def celeba_identity_table(celeba_dir: str) -> dict[str, str]:
    """filename -> `celeba/ID` for one celeba299 folder."""
    path = Path(celeba_dir) / "identities.csv"
    if not path.is_file():
        raise DataSplitError(f"{path} is missing: cannot tell whose photo a celeba299 image is.")
    with path.open(newline="") as fh:
        return {row["image"]: f"celeba/{row['identity']}" for row in csv.DictReader(fh)}


def celeba_photo_counts(root: Path) -> dict[str, int]:
    """`celeba/ID` -> number of photos."""
    counts: dict[str, int] = defaultdict(int)
    for ident in celeba_identity_table(str(check_data_root(root) / "celeba299")).values():
        counts[ident] += 1
    return dict(counts)


def generate_heldout(root: Path | None = None) -> list[str]:
    """Recompute the held-out identity list from the data (sorted)."""
    root = check_data_root(root or default_data_root())
    out: list[str] = []
    for counts in (lfw_photo_counts(root), celeba_photo_counts(root)):
        eligible = [i for i, n in counts.items() if n >= MIN_PHOTOS]
        out += _pick(eligible, round(HELDOUT_FRACTION * len(eligible)))
    return sorted(out)


def generate_heldout_utkface(root: Path | None = None) -> list[str]:
    """Recompute the held-out UTKFace filenames: `UTK_PER_GROUP` per race group."""
    path = Path(root or default_data_root()) / "utkface" / "labels.csv"
    if not path.is_file():
        raise DataSplitError(f"{path} is missing; set FEWSHOT_DATA_DIR to the shared data folder.")
    by_group: dict[int, list[str]] = defaultdict(list)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            by_group[int(row["race"])].append(row["image"])
    out: list[str] = []
    for group in sorted(by_group):
        out += _pick([f"utkface/{n}" for n in by_group[group]], UTK_PER_GROUP)
    return sorted(n.split("/", 1)[1] for n in out)


@lru_cache(maxsize=1)
def load_heldout() -> frozenset[str]:
    """The committed held-out identities (`lfw/NAME`, `celeba/ID`)."""
    return frozenset(_read_lines(HELDOUT_IDENTITIES_FILE))


@lru_cache(maxsize=1)
def load_heldout_utkface() -> frozenset[str]:
    """The committed held-out UTKFace filenames (fairness table only)."""
    return frozenset(_read_lines(HELDOUT_UTKFACE_FILE))


def identity_of(path: str | os.PathLike[str]) -> str:
    """`lfw/NAME`, `celeba/ID` or `utkface/FILENAME` for a photo path in the shared data.

    UTKFace has no identity labels: each photo is its own pseudo-identity.
    """
    p = Path(path)
    parts = p.parts
    if len(parts) >= 3 and parts[-3] == "lfw":
        return f"lfw/{parts[-2]}"
    if len(parts) >= 3 and parts[-2] == "images" and parts[-3] == "celeba299":
        table = celeba_identity_table(str(p.parent.parent))
        if p.name not in table:
            raise DataSplitError(f"{p.name} is not listed in {p.parent.parent / 'identities.csv'}.")
        return table[p.name]
    if len(parts) >= 3 and parts[-2] == "images" and parts[-3] == "utkface":
        return f"utkface/{p.name}"
    raise DataSplitError(f"{p} is not a photo of the shared face data "
                         "(expected lfw/NAME/*.jpg, celeba299/images/*.jpg or utkface/images/*.jpg).")


def is_heldout(path: str | os.PathLike[str]) -> bool:
    """Whether a photo belongs to the evaluation side of the split."""
    ident = identity_of(path)
    if ident.startswith("utkface/"):
        return ident.split("/", 1)[1] in load_heldout_utkface()
    return ident in load_heldout()


def list_photos(root: Path | None = None) -> list[Path]:
    """Every photo of lfw, celeba299 and utkface under `root` (sorted)."""
    root = check_data_root(root or default_data_root())
    photos = sorted((root / "lfw").glob("*/*.jpg"))
    photos += sorted((root / "celeba299" / "images").glob("*.jpg"))
    photos += sorted((root / "utkface" / "images").glob("*.jpg"))
    return photos


def split_photos(root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(train, held-out) photo paths."""
    train: list[Path] = []
    held: list[Path] = []
    for p in list_photos(root):
        (held if is_heldout(p) else train).append(p)
    return train, held


def _write(path: Path, header: str, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"# {h}\n" for h in header.splitlines()) + "".join(f"{ln}\n" for ln in lines)
    path.write_text(body)


def write_split_files(root: Path | None = None) -> None:
    """Regenerate both committed split files from the data."""
    root = root or default_data_root()
    _write(HELDOUT_IDENTITIES_FILE,
           f"Held-out identities (never train on them). Generated by fewshot_core.eval.split:\n"
           f"{HELDOUT_FRACTION:.0%} of identities with >= {MIN_PHOTOS} photos, ranked by "
           f"sha256('{SEED}:' + identity).", generate_heldout(root))
    _write(HELDOUT_UTKFACE_FILE,
           f"Held-out UTKFace filenames for the fairness table, {UTK_PER_GROUP} per race group.\n"
           f"The rest of UTKFace is train-only (self-reconstruction). Ranked by sha256('{SEED}:utkface/' + name).",
           generate_heldout_utkface(root))
    load_heldout.cache_clear()
    load_heldout_utkface.cache_clear()


def summary(root: Path | None = None) -> dict[str, dict[str, int]]:
    """Identity and photo counts per dataset and side, for reports."""
    root = check_data_root(root or default_data_root())
    out: dict[str, dict[str, int]] = {}
    held = load_heldout()
    for name, counts in (("lfw", lfw_photo_counts(root)), ("celeba", celeba_photo_counts(root))):
        h = {i: n for i, n in counts.items() if i in held}
        out[name] = {"train_ids": len(counts) - len(h), "heldout_ids": len(h),
                     "train_photos": sum(counts.values()) - sum(h.values()),
                     "heldout_photos": sum(h.values())}
    n_utk = sum(1 for _ in (root / "utkface" / "images").glob("*.jpg"))
    n_held = len(load_heldout_utkface())
    out["utkface"] = {"train_photos": n_utk - n_held, "heldout_photos": n_held}
    return out


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["write"]:
        write_split_files()
    print(json.dumps(summary(), indent=1))
