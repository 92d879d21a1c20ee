"""A simulator of the Partner Center invoice API and the Entra ID token endpoint (demo, compose, tests).

It is a separate room: nothing here imports from the rest of `exporter` but `exporter.signals` (the main
thread's wait for SIGTERM and SIGINT, which uses nothing but the standard library).
"""

from __future__ import annotations

from exporter.simulator.scenario import (
    Currency,
    Drift,
    Fault,
    LastPayment,
    Scenario,
    ScenarioError,
    TenantScenario,
    default_scenario,
    load_scenario,
    parse_faults,
    parse_scenario,
)
from exporter.simulator.server import Simulator

__all__ = [
    "Currency",
    "Drift",
    "Fault",
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
