"""Which swaps the evaluation makes: held-out targets, their shots, sources and the gallery.

Why: a swap score means something only on people the model never saw, with
the same pairs every run, and with nothing the swapper was given (its shots)
leaking into what it is judged against (the gallery). So every choice here is
a ranking by sha256(seed + names), like the split itself (`split.py`): stable
across machines and library versions, and independent of the order photos
are listed in.

Roles of one identity's photos (ranked by hash):
* the first `min(RESERVE, n - 1)` photos are its *reserve*: target shots, the
  upper-bound probe (a real photo of the target that is neither a shot nor in
  the gallery) and source photos all come from here;
* the rest is its *gallery pool*: the first `gallery_size` usable ones form its
  gallery entry (mean descriptor), so a shot or a source photo is never in the
  gallery. Roles do not depend on which identities end up targets.

"Usable" (a caller's predicate, normally "dlib finds a face") is asked lazily,
photo by photo in rank order, so a quick run only looks at the photos it needs.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from . import split

RESERVE = 8        # photos per identity set aside for shots, probe and sources
MAX_SHOTS = 5      # K = 1, 3, 5 use the first 1, 3, 5 of these (nested)
DEFAULT_SEED = "fewshot-swap-eval-v1"

Usable = Callable[[Path], bool]


def _always(_: Path) -> bool:
    return True


def rank(items: Iterable[str | Path], *context: str, seed: str = DEFAULT_SEED) -> list:
    """`items` ordered by sha256(seed:context:item): a fixed pseudo-random order.

    Paths are ranked by their file name only, so the order does not depend on
    where the data folder is mounted (file names are unique in the shared data).
    """
    ctx = ":".join(context)

    def key(item: str | Path) -> str:
        name = item.name if isinstance(item, Path) else str(item)
        return hashlib.sha256(f"{seed}:{ctx}:{name}".encode()).hexdigest()

    return sorted(items, key=key)


def _first_usable(photos: Iterable[Path], usable: Usable, count: int) -> list[Path]:
    out: list[Path] = []
    for p in photos:
        if len(out) >= count:
            break
        if usable(p):
            out.append(p)
    return out


def heldout_photos(root: Path | None = None, limit_identities: int | None = None,
                   seed: str = DEFAULT_SEED) -> dict[str, list[Path]]:
    """Held-out LFW and celeba299 identity -> its photos (sorted), from the committed split.

    `limit_identities` keeps only the first N identities in rank order (tests only:
    retrieval is then among those N, not all held-out identities).
    """
    root = split.check_data_root(root or split.default_data_root())
    held = split.load_heldout()
    out: dict[str, list[Path]] = {}
    for d in sorted((root / "lfw").iterdir()):
        if d.is_dir() and f"lfw/{d.name}" in held:
            out[f"lfw/{d.name}"] = sorted(d.glob("*.jpg"))
    celeba = root / "celeba299"
    for name, ident in sorted(split.celeba_identity_table(str(celeba)).items()):
        if ident in held:
            out.setdefault(ident, []).append(celeba / "images" / name)
    missing = held - set(out)
    if missing:
        raise split.DataSplitError(f"{len(missing)} held-out identities have no photos under {root} "
                                   f"(e.g. {sorted(missing)[:3]}); point FEWSHOT_DATA_DIR at the shared data.")
    if limit_identities is not None:
        keep = set(rank(out, "identities", seed=seed)[:limit_identities])
        out = {k: v for k, v in out.items() if k in keep}
    return {k: sorted(v) for k, v in sorted(out.items())}


@dataclass(frozen=True)
class Roles:
    """One identity's photos split into the reserve and the gallery pool (both in rank order)."""

    identity: str
    reserve: tuple[Path, ...]
    gallery_pool: tuple[Path, ...]


def roles_of(identity: str, photos: Sequence[Path], seed: str = DEFAULT_SEED) -> Roles:
    ranked = rank(photos, "photos", identity, seed=seed)
    r = min(RESERVE, len(ranked) - 1)
    return Roles(identity, tuple(ranked[:r]), tuple(ranked[r:]))


@dataclass(frozen=True)
class Target:
    """A target identity: its shots (best K = the first K) and the upper-bound probe photo."""

    identity: str
    shots: tuple[Path, ...]
    probe: Path


@dataclass(frozen=True)
class Pair:
    """One swap: put `target`'s identity onto the face of `source` (a photo of `source_identity`)."""

    source: Path
    source_identity: str
    target: str


@dataclass(frozen=True)
class Protocol:
    """Everything a run swaps and compares, fixed by the seed."""

    targets: dict[str, Target]
    pairs: tuple[Pair, ...]
    gallery: dict[str, tuple[Path, ...]]
    seed: str = DEFAULT_SEED
    dropped: dict[str, str] = field(default_factory=dict)  # identity -> why it is not in the gallery

    def shots(self, identity: str, k: int) -> tuple[Path, ...]:
        return self.targets[identity].shots[:k]


def build_protocol(photos: dict[str, list[Path]], *, n_pairs: int, n_targets: int | None = None,
                   gallery_size: int = 10, shots: int = MAX_SHOTS, seed: str = DEFAULT_SEED,
                   usable: Usable = _always) -> Protocol:
    """Pick targets, shots, probes, sources and galleries for `n_pairs` swaps.

    Targets are identities with `shots + 1` usable reserve photos and a gallery
    entry, taken in rank order (all of them when `n_targets` is None). The
    pairs are spread evenly over the targets; each target's sources come from
    other identities in an order ranked by the target's name.
    """
    roles = {ident: roles_of(ident, ps, seed) for ident, ps in photos.items()}
    gallery: dict[str, tuple[Path, ...]] = {}
    dropped: dict[str, str] = {}
    for ident, r in roles.items():
        chosen = _first_usable(r.gallery_pool, usable, gallery_size)
        if chosen:
            gallery[ident] = tuple(chosen)
        else:
            dropped[ident] = "no usable gallery photo"

    targets: dict[str, Target] = {}
    for ident in rank(gallery, "targets", seed=seed):
        if n_targets is not None and len(targets) >= n_targets:
            break
        if len(roles[ident].reserve) < shots + 1:
            continue
        picked = _first_usable(roles[ident].reserve, usable, shots + 1)
        if len(picked) == shots + 1:
            targets[ident] = Target(ident, tuple(picked[:shots]), picked[shots])
    if not targets:
        raise split.DataSplitError("No held-out identity has enough usable photos to be a target "
                                   f"({shots} shots + 1 probe + 1 gallery photo).")

    pairs: list[Pair] = []
    for i, ident in enumerate(targets):
        want = n_pairs // len(targets) + (1 if i < n_pairs % len(targets) else 0)
        pairs += list(_sources_for(ident, want, gallery, roles, usable, seed))
    return Protocol(targets, tuple(pairs), gallery, seed, dropped)


def _sources_for(target: str, count: int, gallery: dict[str, tuple[Path, ...]],
                 roles: dict[str, Roles], usable: Usable, seed: str) -> Iterator[Pair]:
    """`count` source photos of other gallery identities, each from a different person."""
    made = 0
    for ident in rank([g for g in gallery if g != target], "sources", target, seed=seed):
        if made >= count:
            return
        photo = _first_usable(rank(roles[ident].reserve, "source-photo", target, seed=seed), usable, 1)
        if photo:
            made += 1
            yield Pair(photo[0], ident, target)


# --- fairness slice (UTKFace) -------------------------------------------------------

@dataclass(frozen=True)
class FairPair:
    """A 1-shot swap inside one UTKFace race group: `target`'s face onto `source`."""

    group: str
    source: Path
    target: Path


def utkface_groups(root: Path | None = None) -> dict[str, list[Path]]:
    """Held-out UTKFace photos per race group name (split.UTK_GROUPS), sorted."""
    root = Path(root or split.default_data_root())
    labels = root / "utkface" / "labels.csv"
    if not labels.is_file():
        raise split.DataSplitError(f"{labels} is missing; set FEWSHOT_DATA_DIR to the shared data folder.")
    held = split.load_heldout_utkface()
    out: dict[str, list[Path]] = {name: [] for name in split.UTK_GROUPS.values()}
    with labels.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["image"] in held:
                out[split.UTK_GROUPS[int(row["race"])]].append(root / "utkface" / "images" / row["image"])
    return {k: sorted(v) for k, v in out.items()}


def build_fairness(groups: dict[str, list[Path]], pairs_per_group: int, seed: str = DEFAULT_SEED,
                   usable: Usable = _always) -> dict[str, list[FairPair]]:
    """Per group: targets from the first half of the ranked photos, sources from the second half."""
    out: dict[str, list[FairPair]] = {}
    for group, photos in groups.items():
        ranked = rank(photos, "utkface", group, seed=seed)
        half = len(ranked) // 2
        tgts = _first_usable(ranked[:half], usable, pairs_per_group)
        srcs = _first_usable(ranked[half:], usable, len(tgts))
        out[group] = [FairPair(group, s, t) for s, t in zip(srcs, tgts)]
    return out
