"""Deduplication: URL, exact text, MinHash near-duplicates, and repeated lines."""
