"""Stand-in for torchvision, put on the test server's PYTHONPATH only.

ComfyUI 0.3.75 imports torchvision at module level (cosmos, ACE and cascade
model code) but uses it only when those models run. This project never
installs torchvision, so the host tests give the server just enough to import;
anything else fails loudly instead of behaving like the real library.
"""
from __future__ import annotations

from . import models, transforms

__version__ = "0.0.0+fewshot.stub"
STUB = True


def __getattr__(name: str):
    raise AttributeError(f"torchvision stand-in (tests/host/torchvision_stub) has no '{name}'")


__all__ = ["models", "transforms", "STUB"]
