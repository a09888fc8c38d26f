"""The stage prompts: the loader for the shipped TOML files and the LangSmith hub sync."""
