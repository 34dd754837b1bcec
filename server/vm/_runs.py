"""Runs of pages [start, end) and address ranges (addr, length): the arithmetic every VM file shares."""

from __future__ import annotations

Runs = list[tuple[int, int]]


def merge_runs(runs: Runs) -> Runs:
    """Sorted, with overlapping and touching runs joined."""
    out: list[list[int]] = []
    for s, e in sorted(runs):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def subtract_runs(runs: Runs, minus: Runs) -> Runs:
    """runs − minus, both sorted and merged."""
    out: Runs = []
    j = 0
    for s, e in runs:
        while j < len(minus) and minus[j][1] <= s:
            j += 1
        k, cur = j, s
        while k < len(minus) and minus[k][0] < e:
            if minus[k][0] > cur:
                out.append((cur, minus[k][0]))
            cur = max(cur, minus[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Merge adjacent (addr, length) ranges so a control request carries few of them."""
    out: list[list[int]] = []
    for addr, length in sorted(ranges):
        if out and out[-1][0] + out[-1][1] == addr:
            out[-1][1] += length
        else:
            out.append([addr, length])
    return [tuple(r) for r in out]
