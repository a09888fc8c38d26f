"""The three LLM stages (MOPE, MOTE, MAR), each a subgraph with a validate-and-re-ask loop."""
