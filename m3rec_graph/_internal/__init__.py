"""Private helpers shared across layers (no public API; may change without notice)."""
