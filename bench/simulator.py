"""The benchmark's simulator process: N generated tenants with a fixed invoice latency, until SIGTERM.

Run by bench/run.py in its own process (its own GIL), like the simulator of a compose stack:
`python bench/simulator.py --port=P --tenants=N --currencies=3 --latency=0.1`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.signals import StopRequest
from exporter.simulator import Scenario, Simulator


def main() -> int:
    """Serve until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tenants", type=int, required=True)
    p.add_argument("--currencies", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--token-lifetime", type=int, default=3600)
    args = p.parse_args()
    scenario = Scenario.generated(
        args.tenants, args.currencies, args.latency, token_lifetime=args.token_lifetime, app_user=True
    )
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    sim = Simulator(scenario, host="127.0.0.1", port=args.port)
    sim.start()
    stop.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
