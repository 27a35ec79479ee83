"""Labelling tools: MediaPipe face mesh (in its own venv) -> parsing targets for our parser."""
