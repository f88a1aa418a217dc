"""matbench: open-vocabulary material recognition as a benchmarkable task."""

__version__ = "0.1.0"
