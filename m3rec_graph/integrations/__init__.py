"""How hosts run the graph: as a LangChain tool, as a host-graph node, streamed, or from scripts."""
