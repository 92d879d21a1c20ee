"""Soak, short version: the real exporter under churn for about a minute must stay up and not grow beyond noise.

The machinery (scenario, configs, scrapers, /proc sampler, checks) lives in bench/soak.py, whose long run
(`python bench/soak.py --duration 600`) is recorded in docs/soak.md. The fast tests below pin down the growth
check itself, so that the slow one cannot pass by measuring nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Limits, Sample, SoakOptions, growth_problems, run_soak

# About a minute in all: a few seconds to start both processes, 55 s of load, a few seconds of end checks.
CI_OPTIONS = SoakOptions(
    duration=55.0,
    tenants=100,
    interval=1.0,
    reload_every=8.0,
    limits=Limits(warmup=15.0),
)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_short(tmp_path: Path) -> None:
    result = run_soak(CI_OPTIONS, tmp_path)
    report = "\n" + result.report(max_rows=len(result.samples) or 1)
    assert not result.problems, report
    # The run did what it claims: sampled all along, reloaded both ways, scraped every kind.
    assert len(result.samples) >= 0.8 * CI_OPTIONS.duration / CI_OPTIONS.sample_every, report
    assert result.reloads_applied >= 4, report
    assert set(result.tally.ok) == {"plain", "gzip", "openmetrics", "landing"}, report


# --- the growth check ------------------------------------------------------------------------------------------

LIMITS = Limits(warmup=15.0)
BASE_RSS_KIB = 60 * 1024


def _samples(
    seconds: int = 60,
    rss: float = 0.0,  # KiB per second after the warm-up
    fds: float = 0.0,  # per second
    threads: float = 0.0,
) -> list[Sample]:
    """One sample per second: a steep warm-up, then the given slopes plus a little jitter."""
    out = []
    for t in range(seconds):
        jitter = (-1, 0, 1, 0)[t % 4]
        warm = min(t, 15)
        steady = max(0, t - 15)
        out.append(
            Sample(
                t=float(t),
                rss_kib=int(BASE_RSS_KIB - 20_000 + warm * 1_300 + steady * rss + jitter * 300),
                fds=int(20 + warm + steady * fds + jitter),
                threads=int(6 + min(t, 3) + steady * threads + (t % 2)),
                cpu_seconds=t * 0.5,
                sim_requests=t * 200,
            )
        )
    return out


def test_growth_check_passes_flat_noisy_samples_after_a_steep_warmup() -> None:
    samples = _samples()
    samples[40] = Sample(40.0, BASE_RSS_KIB + 30_000, 60, 20, 20.0, 8000)  # one spike: a huge body, a burst
    assert growth_problems(samples, LIMITS) == []


def test_growth_check_catches_a_file_descriptor_per_poll() -> None:
    problems = growth_problems(_samples(fds=1.0), LIMITS)
    assert len(problems) == 1
    assert problems[0].startswith("open fds grew by +")


def test_growth_check_catches_slow_fd_and_thread_leaks() -> None:
    # One more every 3 s: 10 more between the thirds' medians (30 s apart), beyond the allowed 8 fds and 3 threads.
    leak = 1 / 3
    problems = growth_problems(_samples(fds=leak, threads=leak), LIMITS)
    assert [p.split(" grew")[0] for p in problems] == ["open fds", "threads"]


def test_growth_check_catches_rss_growth_in_mib() -> None:
    # 150 KiB a second: about 4.4 MiB between the medians of the first and last thirds (30 s apart).
    problems = growth_problems(_samples(rss=150), LIMITS)
    assert len(problems) == 1
    assert problems[0].startswith("RSS grew +4.")


def test_growth_check_catches_rss_growth_as_a_fraction_of_a_small_process() -> None:
    small = [
        Sample(s.t, s.rss_kib - 40 * 1024, s.fds, s.threads, s.cpu_seconds, s.sim_requests) for s in _samples(rss=80)
    ]
    problems = growth_problems(small, LIMITS)
    assert len(problems) == 1
    assert "RSS grew +2." in problems[0]  # under the MiB limit, over 10% of ~20 MiB


def test_growth_check_allows_growth_within_noise() -> None:
    assert growth_problems(_samples(rss=60, fds=2 / 45, threads=2 / 45), LIMITS) == []


def test_growth_check_needs_samples_after_the_warmup() -> None:
    assert growth_problems(_samples(seconds=20), LIMITS) == ["only 5 samples after the 15 s warm-up (need 9)"]
