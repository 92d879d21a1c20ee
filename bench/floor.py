"""The cold cycle's floor: httpx alone sending a cold cycle's requests, and nothing else.

    python bench/floor.py --config=bench/out/n1000/config.yml   # prints {"cycle_s": ..., "cpu_s": ...}

Run by bench/run.py in a process of its own, after the exporter's cold cycle, against the same simulator. Reads the
exporter's config (tenants, URLs, concurrency) and, like the exporter, sends per tenant a refresh-token grant and
then the invoice request with the token it got, `concurrency` tenants at a time, one `httpx.AsyncClient` per
concurrency slot, the exporter's own (`slot_client` of exporter/upstream/client.py: two connections, a cookie jar
that keeps nothing; a jar that kept the simulator's cookies cost about a tenth more CPU). It parses both answers as
JSON and keeps nothing: no token files, no model, no metrics. The simulator takes the refresh tokens in the files
still (Entra keeps a rotated token's predecessor valid), so the exporter's rotations do not matter. Its cycle
against the bound is what the exporter's cycle can be, at best, on the same machine with the same HTTP client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.upstream.client import slot_client

SCOPE = "https://api.partnercenter.microsoft.com/.default"


def main() -> int:
    """Send the requests, print the cycle's wall time and CPU as JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="the exporter config bench/run.py wrote")
    config = yaml.safe_load(p.parse_args().config.read_text())
    cycle, cpu = asyncio.run(cold_cycle(config))
    print(json.dumps({"cycle_s": cycle, "cpu_s": cpu}))
    return 0


async def cold_cycle(config: dict[str, Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for every tenant's token and invoice request."""
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for tenant in config["tenants"]:
        queue.put_nowait(tenant)
    verify = httpx.create_ssl_context()
    clients = [slot_client(30.0, verify) for _ in range(config["concurrency"])]

    async def slot(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            tenant = queue.get_nowait()
            form = {
                "grant_type": "refresh_token",
                "client_id": tenant["client_id"],
                "client_secret": tenant["client_secret"],
                "refresh_token": Path(tenant["refresh_token_file"]).read_text().strip(),
                "scope": f"{SCOPE} offline_access",
            }
            answer = await client.post(f"{config['login_url']}/{tenant['tenant_id']}/oauth2/v2.0/token", data=form)
            token = answer.raise_for_status().json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            answer = await client.get(f"{config['api_url']}/v1/invoices/{tenant['endpoint']}", headers=headers)
            answer.raise_for_status().json()

    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(slot(client) for client in clients))
    cycle, cpu = time.monotonic() - started, time.process_time() - cpu
    await asyncio.gather(*(client.aclose() for client in clients))
    return cycle, cpu


if __name__ == "__main__":
    sys.exit(main())
