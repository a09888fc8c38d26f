"""Evaluation scripts (run as files: `python evals/NAME.py`); importable for their tests."""
