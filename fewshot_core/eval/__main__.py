"""`python -m fewshot_core.eval {lfw,detect,bench,parser,swap,paired,temporal} [options]`."""
from __future__ import annotations

import importlib
import sys

from ..errors import FewShotError

COMMANDS = {
    "lfw": "fewshot_core.eval.lfw",
    "detect": "fewshot_core.eval.detection",
    "bench": "fewshot_core.eval.bench",
    "parser": "fewshot_core.eval.parser",
    "swap": "fewshot_core.eval.swap",
    "paired": "fewshot_core.eval.paired",
    "temporal": "fewshot_core.eval.temporal",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m fewshot_core.eval {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except FewShotError as exc:  # a missing photo, model file or data folder: its message names the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
