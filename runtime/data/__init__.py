"""The data stages: sources, dedup, filters, tokenizer, token shards and the packed loader.

Every stage reads and writes the *documents* artifact format (see `documents.py`), so stages
compose in any order the spec chooses; only `token_shards` and `loader` speak tokens.
"""
