"""`ctxzip savings`: what compression did to the bill, from the proxy's ledger.

Reads the SQLite ledger the proxy writes (`ctxzip.proxy.ledger`), prices every request
with the price table (`ctxzip.proxy.pricing`) and prints, per model, method or route,
what was paid, what the uncompressed requests would have cost with the same cache
behaviour, and the difference; then plots the net savings over time and per method.
How the estimate is made and where it is weak: docs/savings.md.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ctxzip.proxy.config import ConfigError, load_config
from ctxzip.proxy.ledger import Ledger, Record, default_ledger_path
from ctxzip.proxy.pricing import PriceTable, PricingError, load_prices

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """A Unix time from ``30m``, ``24h``, ``7d``, ``2w`` (ago) or an ISO date/time."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an age (30m, 24h, 7d, 2w) or an ISO date (2026-12-01)"
        ) from None


@dataclass
class Line:
    """One row of the report: the totals of one group of requests."""

    key: str
    requests: int = 0
    priced: int = 0  # requests with usage and a price
    losses: int = 0  # priced requests whose compression cost more than it saved
    tokens_before: int = 0
    tokens_after: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    paid_usd: float = 0.0
    uncompressed_usd: float = 0.0
    list_price_usd: float = 0.0  # removed tokens at list price: the naive figure

    @property
    def saved_usd(self) -> float:
        """Estimated uncompressed cost minus paid (negative: compression cost money)."""
        return self.uncompressed_usd - self.paid_usd

    @property
    def saved_pct(self) -> float:
        """`saved_usd` as a share of the estimated uncompressed cost."""
        return 100 * self.saved_usd / self.uncompressed_usd if self.uncompressed_usd else 0.0

    def add(self, record: Record, money: tuple[float, float] | None, naive: float) -> None:
        """Count one request; `money` is (paid, uncompressed) or None when unpriced."""
        self.requests += 1
        self.tokens_before += record.tokens_before
        self.tokens_after += record.tokens_after
        self.input_tokens += record.input_tokens
        self.cache_read_tokens += record.cache_read_tokens
        self.cache_write_tokens += record.cache_write_tokens
        self.output_tokens += record.output_tokens
        if money is not None:
            self.priced += 1
            self.paid_usd += money[0]
            self.uncompressed_usd += money[1]
            self.losses += money[1] < money[0]
            self.list_price_usd += naive

    def to_dict(self) -> dict[str, Any]:
        """The line with its derived figures, for --json."""
        return {**asdict(self), "saved_usd": self.saved_usd, "saved_pct": self.saved_pct}


def _key(record: Record, by: str) -> str:
    return str(getattr(record, by) or "(none)")


def summarize(records: list[Record], prices: PriceTable, by: str) -> tuple[list[Line], Line]:
    """Per-group lines (largest saving first) and the total line."""
    groups: dict[str, Line] = {}
    total = Line("total")
    for record in records:
        money = record.dollars(prices)
        naive = record.list_price_saving(prices)
        groups.setdefault(_key(record, by), Line(_key(record, by))).add(record, money, naive)
        total.add(record, money, naive)
    return sorted(groups.values(), key=lambda g: -g.saved_usd), total


def render_table(lines: list[Line], total: Line, by: str) -> str:
    """A plain-text table; the last column prices the removed tokens at list price, the naive
    figure that ignores the cache."""
    head = (by, "reqs", "priced", "tok before", "tok after", "prompt", "cached", "written",
            "paid $", "uncompr. $", "saved $", "saved %", "losses", "list-price $")  # fmt: skip
    rows = [head]
    for line in [*lines, total]:
        rows.append((
            line.key[:28], str(line.requests), str(line.priced), f"{line.tokens_before:,}",
            f"{line.tokens_after:,}", f"{line.input_tokens:,}", f"{line.cache_read_tokens:,}",
            f"{line.cache_write_tokens:,}", f"{line.paid_usd:.4f}",
            f"{line.uncompressed_usd:.4f}", f"{line.saved_usd:+.4f}", f"{line.saved_pct:+.1f}",
            str(line.losses), f"{line.list_price_usd:.4f}",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def fmt(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    out = [fmt(rows[0]), "-" * len(fmt(rows[0]))]
    out += [fmt(r) for r in rows[1:-1]]
    out += ["-" * len(out[0]), fmt(rows[-1])]
    return "\n".join(out)


def write_plot(records: list[Record], prices: PriceTable, path: Path) -> None:
    """Cumulative net savings over time (one line per method) and net savings per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(2, 1))
    per_method: dict[str, tuple[list[datetime], list[float]]] = {}
    times: list[datetime] = []
    running: list[float] = []
    for record in records:
        money = record.dollars(prices)
        if money is None:
            continue
        when = datetime.fromtimestamp(record.ts)
        saved = money[1] - money[0]
        times.append(when)
        running.append((running[-1] if running else 0.0) + saved)
        xs, ys = per_method.setdefault(record.method or "(none)", ([], []))
        xs.append(when)
        ys.append((ys[-1] if ys else 0.0) + saved)
    left.plot(times, running, color="black", linewidth=2, label="all", drawstyle="steps-post")
    for method, (xs, ys) in sorted(per_method.items()):
        left.plot(xs, ys, label=method, drawstyle="steps-post")
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_title("Net savings over time (cache effects included)")
    left.set_ylabel("US$ saved (cumulative)")
    left.legend(loc="best", fontsize="small")
    locator = mdates.AutoDateLocator()
    left.xaxis.set_major_locator(locator)
    left.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    names = sorted(per_method)
    totals = [per_method[n][1][-1] for n in names]
    right.bar(names, totals, color=["tab:green" if t >= 0 else "tab:red" for t in totals])
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_title("Net savings per method")
    right.set_ylabel("US$")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command("savings")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False),
              help="The ledger file (default: the proxy's, from --config or CTXZIP_PROXY__LEDGER__PATH, "
              "else the cache dir's).")  # fmt: skip
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Proxy config: its [ledger] path and [pricing] table.")  # fmt: skip
@click.option("--since", help="Only requests since: 30m, 24h, 7d, 2w or an ISO date/time.")
@click.option("--by", type=click.Choice(["model", "method", "route"]), default="model",
              show_default=True, help="Group the table by.")  # fmt: skip
@click.option("--prices", "prices_path", type=click.Path(dir_okay=False),
              help="A TOML/YAML price table overriding the shipped one.")  # fmt: skip
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default="savings.png",
              show_default=True, help="Where to write the PNG plot.")  # fmt: skip
@click.option("--no-plot", is_flag=True, help="Do not write the plot.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def savings_command(ledger_path: str | None, config_path: str | None, since: str | None,
                    by: str, prices_path: str | None, plot_path: str, no_plot: bool,
                    as_json: bool) -> None:  # fmt: skip
    """What compression saved, priced at the provider's cache mix (see docs/savings.md)."""
    try:  # the proxy's own settings: --config, then CTXZIP_PROXY__* variables
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    ledger_path = ledger_path or config.ledger.path or None
    pricing = prices_path or config.pricing.path or None
    path = Path(ledger_path) if ledger_path else default_ledger_path()
    if not path.is_file():
        raise click.UsageError(f"no ledger at {path} (has the proxy run with [ledger] on?)")
    try:
        start = parse_since(since) if since else None
        prices = load_prices(pricing)
    except (ValueError, PricingError) as exc:
        raise click.UsageError(str(exc)) from None
    ledger = Ledger(path)
    try:
        records = ledger.records(start)
    finally:
        ledger.close()
    lines, total = summarize(records, prices, by)
    if as_json:
        click.echo(json.dumps({"by": by, "prices_as_of": prices.as_of, "ledger": str(path),
                               "groups": [g.to_dict() for g in lines],
                               "total": total.to_dict()}, indent=2))  # fmt: skip
    else:
        click.echo(render_table(lines, total, by))
        click.echo(f"\n{total.requests} requests, {total.priced} priced (prices as of "
                   f"{prices.as_of}); saved = estimated uncompressed cost - paid, cache "
                   "effects included; list-price = removed tokens x input price.")  # fmt: skip
    if not no_plot and records:
        write_plot(records, prices, Path(plot_path))
        if not as_json:
            click.echo(f"plot: {plot_path}")
