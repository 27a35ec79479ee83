"""fewshot-swap core: few-shot face swapping in plain PyTorch.

Importable and usable without ComfyUI. Image convention throughout the core:
float tensors of shape [B, 3, H, W], RGB, values in [0, 1].
"""
from .errors import FewShotError

__all__ = ["FewShotError"]
__version__ = "0.1.0"
