"""The benchmark's upstream: N generated App+User tenants with a fixed invoice latency, until SIGTERM.

Run by bench/run.py in its own process (its own GIL), from this checkout whichever exporter is measured:
`python bench/simulator.py --port=P --tenants=N --currencies=3 --latency=0.1 --token-lifetime=60`.
Only the simulator's public API is used (`Scenario.generated`, `Simulator`; docs/simulator.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.simulator import Scenario, Simulator


def main() -> int:
    """Serve until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tenants", type=int, required=True)
    p.add_argument("--currencies", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.1, help="seconds added to every invoice answer")
    p.add_argument("--token-lifetime", type=int, default=3600, help="expires_in of access tokens, seconds")
    args = p.parse_args()
    scenario = Scenario.generated(
        args.tenants, args.currencies, args.latency, token_lifetime=args.token_lifetime, app_user=True
    )
    # Blocked before the server's threads start, so that they inherit the mask and only sigwait sees the signals.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    sim = Simulator(scenario, host="127.0.0.1", port=args.port)
    sim.start()
    signal.sigwait(stop)
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
