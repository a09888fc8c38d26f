"""The `m3rec` command line: one module per command group, `main` dispatches."""

from m3rec_graph.cli.app import main

__all__ = ["main"]
