"""The three LLM stages (MOPE, MOTE, MAR), each a pair of graph nodes with a validate-and-re-ask loop."""
