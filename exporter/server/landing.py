"""The landing page: version, links, and one row per tenant with its state, currencies and last success."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from exporter import __version__
from exporter.config import format_duration
from exporter.snapshot import Snapshot, TenantState


def _format_time(ts: float | None) -> str:
    if ts is None:
        return "never"
    when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when} ({_age(time.time() - ts)} ago)"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _tenant_row(name: str, state: TenantState) -> str:
    status = "pending" if state.up is None else ("up" if state.up else "down")  # also the cell's CSS class
    currencies = ", ".join(sorted(s.currency for s in state.summaries or ()))
    cells = (
        f'<td>{html.escape(name)}</td><td class="{status}">{status}</td>'
        f"<td>{html.escape(currencies) or '&ndash;'}</td>"
        f'<td class="when">{html.escape(_format_time(state.last_success))}</td>'
        f"<td>{html.escape(state.last_error or '') or '&ndash;'}</td>"
    )
    return f"<tr>{cells}</tr>"


def landing_page(snap: Snapshot) -> str:
    rows = "\n".join(_tenant_row(t.name, snap.tenants.get(t.name) or TenantState(t.name)) for t in snap.config.tenants)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Partner Center Exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-top: 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .35rem .7rem; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
.up {{ color: #1a7f37; font-weight: 600; }} .down {{ color: #cf222e; font-weight: 600; }}
.pending {{ color: #9a6700; }}
td.when {{ white-space: nowrap; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style>
</head>
<body>
<h1>Partner Center Exporter</h1>
<p>Version <code>{html.escape(__version__)}</code>. Polls Microsoft Partner Center invoice summaries every
{html.escape(format_duration(snap.config.interval))}.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="healthz">Health</a> &middot; <a href="readyz">Readiness</a></li>
</ul>
<h2>Tenants</h2>
<table>
<thead><tr><th>Tenant</th><th>State</th><th>Currencies</th><th>Last success</th><th>Last error</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
