"""The identity-conditioned face generator: config, layers, network, degradation, file I/O."""
from .config import GeneratorConfig
from .degrade import degrade_for_inference, random_degrade
from .io import load_generator, random_generator, read_generator_config, save_generator
from .network import FewShotGenerator, SourceCondition, count_parameters

__all__ = [
    "FewShotGenerator",
    "SourceCondition",
    "GeneratorConfig",
    "count_parameters",
    "degrade_for_inference",
    "load_generator",
    "random_degrade",
    "random_generator",
    "read_generator_config",
    "save_generator",
]
