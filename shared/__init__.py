"""skyhook shared code package."""

__version__ = "0.1.0"
