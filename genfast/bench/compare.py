"""`genfast bench --compare BASELINE.json`: each row against a saved run.

Rows are matched on (suite, op, size, mode, provider, dtype; a baseline saved
before rows had a dtype counts as float32). A row is a regression
when its median is slower than the baseline's by more than ``threshold``
percent; the command then exits 1, so a user's CI can guard a change with a
run saved before it (`genfast bench --json base.json`). Medians of different
runs are only comparable on the same machine and settings: the report says
when the baseline's device, threads or torch differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

KEY = ("suite", "op", "size", "mode", "provider")  # required in every row; + dtype
SETUP = ("device", "device_name", "machine", "threads", "torch_version", "backend", "cpu_isa",
         "allocator")


def _key(r: dict) -> tuple:
    return tuple(r[k] for k in KEY) + (r.get("dtype") or "float32",)


class BaselineError(ValueError):
    """The baseline file cannot be read as a `genfast bench --json` run."""


@dataclass
class Change:
    key: tuple
    base_ms: float
    now_ms: float

    @property
    def percent(self) -> float:
        return (self.now_ms / self.base_ms - 1.0) * 100.0


def load(path: str) -> dict:
    """The JSON document of a saved run (meta + rows), checked for shape."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise BaselineError(f"--compare: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise BaselineError(f"--compare: {path} is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or any(
            not isinstance(r, dict) or not all(k in r for k in KEY + ("median_ms",))
            for r in doc["rows"]):
        raise BaselineError(f"--compare: {path} is not a `genfast bench --json` file")
    return doc


def compare(rows: list[dict], baseline: dict) -> tuple[list[Change], list[tuple], list[tuple]]:
    """(changes of rows timed in both, keys only now, keys only in the baseline)."""
    base = {_key(r): r for r in baseline["rows"] if r.get("median_ms")}
    now = {_key(r): r for r in rows if r.get("median_ms")}
    changes = [Change(k, base[k]["median_ms"], now[k]["median_ms"]) for k in now if k in base]
    return changes, [k for k in now if k not in base], [k for k in base if k not in now]


def _name(key: tuple) -> str:
    """op size mode provider, and the dtype when it is not float32."""
    return " ".join(str(x) for x in key[1:5]) + ("" if key[5] == "float32" else f" {key[5]}")


def format_comparison(changes: list[Change], only_now, only_base, threshold: float,
                      setup_now: dict, setup_base: dict) -> tuple[str, int]:
    """The comparison as text, and how many rows regressed past ``threshold``."""
    lines = [f"compared with the baseline (threshold +{threshold:g}%):"]
    differ = [f"{k} {setup_base.get(k)!r} -> {setup_now.get(k)!r}" for k in SETUP
              if k in setup_base and setup_base.get(k) != setup_now.get(k)]
    if differ:
        lines.append("  note: the setup differs: " + "; ".join(differ))
    regressions = 0
    for c in changes:
        slow = c.percent > threshold
        regressions += slow
        lines.append(f"  {'SLOWER' if slow else 'ok':<6} {_name(c.key)}: "
                     f"{c.base_ms:.4g} ms -> {c.now_ms:.4g} ms ({c.percent:+.1f}%)")
    for k in only_now:
        lines.append(f"  new    {_name(k)}")
    for k in only_base:
        lines.append(f"  gone   {_name(k)}")
    lines.append(f"{regressions} of {len(changes)} rows slower than the baseline by more than "
                 f"{threshold:g}%")
    return "\n".join(lines), regressions
