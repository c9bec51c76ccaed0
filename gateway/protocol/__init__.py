"""Codecs for the inference protocols (pure: bytes in, arrays out)."""
