"""Data sets for rnnkit's demos and tests (small, synthetic, generated on the fly)."""
