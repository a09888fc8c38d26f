"""Item text as every consumer reads it: MOTE's input, the trait-cache key, the text baseline."""
