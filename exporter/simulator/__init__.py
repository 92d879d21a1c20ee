"""A simulator of the Partner Center invoice API and the Entra ID token endpoint (demo, compose, tests).

It is a separate room: from the rest of `exporter` it imports only helpers that use nothing but the standard
library and PyYAML: `exporter.signals` (the main thread's wait for SIGTERM and SIGINT),
`exporter.config.yamlfile` (the strict YAML loader and `ConfigError`) and `exporter.version` (`--version`).
"""

from __future__ import annotations

from exporter.simulator.assertions import Federation
from exporter.simulator.loader import default_scenario, load_scenario, parse_faults, parse_scenario
from exporter.simulator.scenario import (
    Currency,
    Drift,
    Fault,
    LastPayment,
    Scenario,
    ScenarioError,
    TenantScenario,
)
from exporter.simulator.server import Simulator

__all__ = [
    "Currency",
    "Drift",
    "Fault",
    "Federation",
    "LastPayment",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "TenantScenario",
    "default_scenario",
    "load_scenario",
    "parse_faults",
    "parse_scenario",
]
