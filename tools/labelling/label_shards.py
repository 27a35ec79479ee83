"""Label every prepared shard with MediaPipe: `python -m tools.labelling.label_shards [--prepared DIR]`.

Writes `labels/<shard>.npz` beside the shards (same row order), skipping shards
already labelled, then `labels/summary.json`. Developer tooling: MediaPipe runs
in its own virtual environment, never at run time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fewshot_core.train.prepare import prepared_dir
from tools.labelling.label_crops import label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.labelling.label_shards")
    parser.add_argument("--prepared", type=Path, default=prepared_dir(128))
    parser.add_argument("--wait-complete", action="store_true", help="fail unless the preparation finished")
    args = parser.parse_args(argv)
    if args.wait_complete and not (args.prepared / "summary.json").is_file():
        print(f"error: {args.prepared} has no summary.json: the preparation has not finished", file=sys.stderr)
        return 2
    out_dir = args.prepared / "labels"
    out_dir.mkdir(parents=True, exist_ok=True)
    for shard in sorted(p for p in args.prepared.glob("*.npz") if not p.name.endswith(".tmp.npz")):
        target = out_dir / shard.name
        if target.is_file():
            continue
        summary = label(shard, out_dir / (shard.stem + ".tmp.npz"))
        (out_dir / (shard.stem + ".tmp.npz")).replace(target)
        print(f"{shard.name}: {summary['crops']} crops, {summary['failed']} failed", flush=True)
    totals = {"crops": 0, "failed": 0, "complete": (args.prepared / "summary.json").is_file()}
    for labels in sorted(out_dir.glob("*.npz")):
        if not labels.name.endswith(".tmp.npz"):
            with np.load(labels) as data:
                totals["crops"] += int(data["found"].shape[0])
                totals["failed"] += int((~data["found"]).sum())
    if totals["complete"]:  # the parser's trainer waits for this file: write it only once all shards exist
        (out_dir / "summary.json").write_text(json.dumps(totals))
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
