"""What crosses the package's edges: the motivation schema, the LLM answer contracts, the request."""
