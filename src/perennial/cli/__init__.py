"""Command-line entry points: ``perennial-run`` and ``perennial-registry``."""
