"""The files the exporter reads: its config (`settings`), the web config (`web`), and the strict YAML they share."""

from exporter.config.check import describe_config, format_duration
from exporter.config.credentials import AssertionFile, Certificate, Credential
from exporter.config.fields import parse_duration
from exporter.config.settings import CLOUDS, Config, TenantConfig, Threshold, load_config, parse_config
from exporter.config.yamlfile import ConfigError

__all__ = [
    "CLOUDS",
    "AssertionFile",
    "Certificate",
    "Config",
    "ConfigError",
    "Credential",
    "TenantConfig",
    "Threshold",
    "describe_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]
