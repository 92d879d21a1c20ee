"""The files the exporter reads: its config (`settings`), the web config, and the strict YAML loader they share."""

from exporter.config.settings import (
    Config,
    TenantConfig,
    Threshold,
    describe_config,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from exporter.config.yamlfile import ConfigError

__all__ = [
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
