"""Serving-side memory: paged KV cache (block allocator, block tables, copy-on-write), traces."""
