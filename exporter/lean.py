"""Keep optional packages that the exporter never uses from being imported by its dependencies.

Imported by the command line before anything imports httpx. When they are installed, httpcore imports trio
(with attrs, outcome and sortedcontainers) to support trio's event loop, and httpx imports click and pygments
for its own command line: ~90 modules, ~5 MiB of resident memory in a process that only ever runs asyncio.
A `None` entry in `sys.modules` makes `import trio` raise ImportError, which both libraries catch and treat as
"not installed". Nothing is blocked that is already imported, so a process that does use trio keeps it.
"""

from __future__ import annotations

import sys

NEVER_USED = ("trio", "httpx._main")

for _name in NEVER_USED:
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]
