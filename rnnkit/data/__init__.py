"""Data: synthetic long-memory tasks, text formats and vocabularies, and dataset loaders
(ATIS)."""
