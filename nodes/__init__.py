"""ComfyUI node wrappers for fewshot-swap (thin: the work is in fewshot_core)."""
