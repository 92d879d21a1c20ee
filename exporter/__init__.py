"""partnercenter-exporter: Microsoft Partner Center invoice summaries as Prometheus metrics."""

__version__ = "0.1.0"
