"""Evaluation and benchmark commands; each prints a one-line JSON summary as its last line."""
