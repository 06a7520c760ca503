"""Benchmarks behind `paperlab bench` (attention, decode, scan): plain dicts, no printing."""
