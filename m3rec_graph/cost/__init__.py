"""What a run costs: the dry-run estimate, measured cost experiments and the OpenAI Batch API."""
