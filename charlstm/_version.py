"""The package version: one place, below every module that names it."""

__version__ = "0.1.0"
