"""Expression error by landmark region for classical, ours and ours swapped to the source's own identity.

Why: the self-swap separates what the generator loses by re-rendering a face (it keeps the identity) from what
comes with a new identity (face shape). Developer diagnostic on the swap evaluation's validation pairs:

    python tools/diagnostics/expression_self_swap.py --pairs 60 --generator weights/fewshot_generator_128.safetensors

Prints a line per method and a one-line JSON summary last.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere without installing the repo

from fewshot_core.eval import protocol as P
from fewshot_core.eval.analysis import Analyser
from fewshot_core.eval.evaluator import DlibEvaluator
from fewshot_core.eval.expression import landmark_errors, region_means
from fewshot_core.eval.methods import ClassicalMethod, OursMethod
from fewshot_core.eval.split import default_data_root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--generator", type=Path, required=True)
    ap.add_argument("--seed", default="validation-px")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    analyser = Analyser(DlibEvaluator.from_package(), None, iris=None)
    photos = P.heldout_photos(default_data_root(), None, args.seed)
    proto = P.build_protocol(photos, n_pairs=args.pairs, n_targets=None, gallery_size=2, shots=5, seed=args.seed,
                             usable=analyser.usable)
    classical, ours = ClassicalMethod(analyser), OursMethod(analyser, args.generator)
    results: dict[str, list[dict[str, float]]] = {"classical": [], "ours": [], "ours_self": []}
    start = time.perf_counter()
    for pair in proto.pairs:
        src = analyser.photo(pair.source)
        shots = proto.targets[pair.target].shots[:5]
        outputs = {"classical": classical.output(pair.source, shots)[0], "ours": ours.output(pair.source, shots)[0],
                   "ours_self": ours.output(pair.source, (pair.source,))[0]}
        for name, out in outputs.items():
            if out.face is not None and src.face is not None:
                errors = landmark_errors(src.face.landmarks, out.face.landmarks)
                row = {**region_means(errors), "all": float(errors.mean())}
                results[name].append(row)
    summary = {name: {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
               for name, rows in results.items() if rows}
    for name, row in summary.items():
        print(f"{name:10s} n={len(results[name]):3d} " + " ".join(f"{k} {v:.4f}" for k, v in row.items()))
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(json.dumps({"diagnostic": "expression_self_swap", "pairs": len(proto.pairs), "seed": args.seed,
                      "generator": args.generator.name, "results": summary}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
