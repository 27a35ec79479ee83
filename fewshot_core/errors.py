"""User-facing errors: each one names the problem and the fix.

Nodes and the CLI catch `FewShotError` and show its message as is, so a user
never sees a traceback from deep inside the pipeline.
"""
from __future__ import annotations


class FewShotError(Exception):
    """Base class of every error that is the user's to fix."""


class NoFaceError(FewShotError):
    """An image in which a face was required holds none."""


class ModelFileMissingError(FewShotError):
    """A model file is not where it is expected; the message gives the path and the command that creates it."""


class WeightsMismatchError(FewShotError):
    """A weights file is unreadable or does not fit the architecture it is loaded into."""


class InputShapeError(FewShotError):
    """A tensor handed in has the wrong shape, dtype or value range."""


class FetchError(FewShotError):
    """A pre-trained part could not be obtained from its registry package."""
