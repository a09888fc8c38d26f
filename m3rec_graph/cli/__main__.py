"""`python -m m3rec_graph.cli` runs the `m3rec` command."""

from m3rec_graph.cli.app import main

main()
