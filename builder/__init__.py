"""Build, lint and publish the Polymarket deployment's Debian packages."""

__version__ = "1.0.0"
