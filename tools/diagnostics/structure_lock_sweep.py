"""Structure-lock settings against expression error and identity distance on the validation pairs.

Why: the lock trades a little of the target's face shape for the source's geometry; this shows how much of each
a setting buys before one is made the default. Developer diagnostic (never the test pairs):

    python tools/diagnostics/structure_lock_sweep.py --pairs 60 --settings '{}' '{"max_shift_px": 6}'

Each setting is a JSON dict of `fit_structure_warp` keywords plus "strength" (default 1). A first row without
the lock is always included. Prints a line per setting and a one-line JSON summary last.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere without installing the repo

import fewshot_core.structure_lock as lock
from fewshot_core.eval import protocol as P
from fewshot_core.eval.analysis import Analyser
from fewshot_core.eval.evaluator import DlibEvaluator
from fewshot_core.eval.expression import landmark_errors, region_means
from fewshot_core.eval.methods import OursMethod
from fewshot_core.eval.split import default_data_root
from fewshot_core.weights import default_generator_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--generator", type=Path, default=None)
    ap.add_argument("--seed", default="validation-px")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="*", default=["{}"], help="JSON dicts of fit_structure_warp keywords")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    analyser = Analyser(DlibEvaluator.from_package(), None, iris=None)
    photos = P.heldout_photos(default_data_root(), None, args.seed)
    proto = P.build_protocol(photos, n_pairs=args.pairs, n_targets=None, gallery_size=2, shots=5, seed=args.seed,
                             usable=analyser.usable)
    original_fit = lock.fit_structure_warp
    settings = [None] + [json.loads(s) for s in args.settings]
    summary: dict[str, dict[str, float]] = {}
    for setting in settings:
        label = "off" if setting is None else json.dumps(setting, sort_keys=True)
        kwargs = dict(setting or {})
        strength = float(kwargs.pop("strength", 1.0))
        lock.fit_structure_warp = functools.partial(original_fit, **kwargs)
        ours = OursMethod(analyser, args.generator or default_generator_path(),
                          structure_lock=0.0 if setting is None else strength)
        rows, start = [], time.perf_counter()
        for pair in proto.pairs:
            src = analyser.photo(pair.source)
            shots = proto.targets[pair.target].shots[:5]
            out = ours.output(pair.source, shots)[0]
            if out.face is None or src.face is None:
                continue
            errors = landmark_errors(src.face.landmarks, out.face.landmarks)
            target = np.mean([analyser.photo(s).feature for s in shots], axis=0)
            rows.append({**region_means(errors), "all": float(errors.mean()),
                         "dist_tgt": float(np.linalg.norm(out.feature - target))})
        summary[label] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
        summary[label]["n"] = len(rows)
        print(f"{label:40s} " + " ".join(f"{k} {v:.4f}" for k, v in summary[label].items())
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    lock.fit_structure_warp = original_fit
    print(json.dumps({"diagnostic": "structure_lock_sweep", "pairs": args.pairs, "seed": args.seed,
                      "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
