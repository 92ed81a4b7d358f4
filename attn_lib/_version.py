"""The package version, in one place (the notebooks install the release tagged with it)."""

__version__ = "0.1.0"
