"""Pre-trained parts: registry provenance, fetch and conversion."""
from .fetch import FETCH_COMMAND, fetch_all, part_path, require_part
from .parts import PARTS, Part

__all__ = ["FETCH_COMMAND", "PARTS", "Part", "fetch_all", "part_path", "require_part"]
