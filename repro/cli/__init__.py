"""The command line's commands, one module per group; `paperlab.py` holds the click group.

Only this package and `paperlab.py` import click or rich.
"""
