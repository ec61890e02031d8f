"""Gatekeep: a fair virtual waiting room with signed admission tokens."""

__version__ = "0.1.0"
