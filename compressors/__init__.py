"""Compression methods, one module each. Look them up by name with `ctxzip.get_compressor`."""
