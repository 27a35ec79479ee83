"""Helpers and fixtures that run tests against a real ComfyUI server (see server.py)."""
