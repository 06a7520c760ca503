"""Decoding algorithms beyond one token per forward: speculative decoding (draft + target)."""
