"""`python -m fewshot_core.train --config NAME|PATH [--steps N] [--export weights/X.safetensors]`.

Resumes from the run's last checkpoint (in the cache folder, outside git).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import TrainConfig
from .prepare import prepared_dir
from .trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.train")
    parser.add_argument("--config", required=True, help="a config name in fewshot_core/train/configs or a JSON path")
    parser.add_argument("--data", type=Path, default=None, help="prepared shards (default: the cache)")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None, help="stop at this step (resumable later)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="checkpoint and stop after this much wall time (for bounded GPU slots)")
    parser.add_argument("--init-generator", type=Path, default=None,
                        help="start a fresh run from this exported generator (fp16 .safetensors)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override config values")
    parser.add_argument("--export", type=Path, default=None, help="write the generator (fp16) here at the end")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = TrainConfig.load(args.config, overrides)
    trainer = Trainer(cfg, args.data or prepared_dir(cfg.resolution), args.run_dir)
    if args.init_generator:
        trainer.init_generator_from(args.init_generator)
    print(f"run {cfg.name}: {len(trainer.data)} training crops, {len(trainer.data.identity_names)} identities, "
          f"device {trainer.device}, resuming at step {trainer.step}", flush=True)
    last = trainer.train(args.steps, args.max_minutes)
    if args.export:
        trainer.export(args.export)
        print(f"exported {args.export}")
    print(json.dumps({"run": cfg.name, "step": trainer.step, "images_seen": trainer.images_seen,
                      "hours": round(trainer.seconds / 3600, 3), **{k: round(v, 4) for k, v in last.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
