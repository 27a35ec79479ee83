"""Face parsing: the class list and the landmark renderer that makes parser training targets."""
from .classes import IGNORE_INDEX, NUM_CLASSES, PARSE_CLASSES
from .render import iris_centres, render_class_map, render_class_maps

__all__ = ["PARSE_CLASSES", "NUM_CLASSES", "IGNORE_INDEX", "render_class_map", "render_class_maps", "iris_centres"]
