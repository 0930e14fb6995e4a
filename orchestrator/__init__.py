"""mmlab: a test orchestrator for arm64 Linux memory-management patches."""

__version__ = "0.1.0"
