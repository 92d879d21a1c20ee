"""The files the exporter reads: its config (`settings`), the web config (`web`), and the strict YAML they share."""

from exporter.config.check import describe_config, format_duration
from exporter.config.credentials import AssertionFile, Certificate
from exporter.config.fields import parse_duration
from exporter.config.settings import Config, TenantConfig, Threshold, load_config, parse_config
from exporter.config.yamlfile import ConfigError

__all__ = [
    "AssertionFile",
    "Certificate",
    "Config",
    "ConfigError",
    "TenantConfig",
    "Threshold",
    "describe_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]
