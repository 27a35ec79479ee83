"""`torchvision.models` stand-in: present so `torchvision.models.X` fails with a clear message."""
from __future__ import annotations


def __getattr__(name: str):
    raise AttributeError(
        f"torchvision.models.{name} is not available: the test host uses a torchvision stand-in"
    )
