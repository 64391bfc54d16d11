"""The report's two charts as inline SVG (no script, no style attribute: the page's
Content-Security-Policy allows neither): a decision's budget bar and the log's decisions
over time. Pure: numbers in, an ``<svg>`` string out. Only numbers and fixed words go
into the markup; nothing from the log is written here unescaped."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

#: Stacking order (bottom first) and the CSS class of each verdict's colour.
ORDER = ("optimal", "gap", "heuristic", "fallback", "infeasible", "unknown")
_BINS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(hours=1), timedelta(hours=6),
         timedelta(days=1), timedelta(days=7), timedelta(days=30))
_STEPS = ("minute", "10 minutes", "hour", "6 hours", "day", "week", "30 days")
_MAX_BINS = 60


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def budget_bar(used: Any, limit: Any, window: Any, reserve_output: Any, reserve_prompt: Any) -> str:
    """Used vs free within the limit, then the reserves up to the context window (when the
    policy has one); used beyond the limit is drawn in the over-budget colour."""
    used_n, limit_n, window_n = _n(used), _n(limit), _n(window)
    out_n, prompt_n = _n(reserve_output), _n(reserve_prompt)
    total = max(window_n, limit_n + out_n + prompt_n if window_n else limit_n, used_n, 1)
    x = 0.0
    rects = []

    def seg(tokens: int, cls: str, label: str) -> None:
        nonlocal x
        if tokens <= 0:
            return
        w = 1000 * tokens / total
        rects.append(f'<rect class="{cls}" x="{x:.1f}" y="0" width="{w:.1f}" height="22">'
                     f"<title>{label}: {tokens:,} tokens</title></rect>")
        x += w

    seg(min(used_n, limit_n), "b-used", "used")
    seg(max(limit_n - used_n, 0), "b-free", "free")
    seg(max(used_n - limit_n, 0), "b-over", "over the limit")
    if window_n:
        seg(out_n, "b-res", "reserved for the output")
        seg(prompt_n, "b-resp", "reserved for the prompt")
    limit_x = 1000 * min(limit_n, total) / total
    return ('<svg class="bar" viewBox="0 0 1000 22" preserveAspectRatio="none" role="img" '
            f'aria-label="budget: {used_n:,} of {limit_n:,} tokens used">{"".join(rects)}'
            f'<line class="b-limit" x1="{limit_x:.1f}" x2="{limit_x:.1f}" y1="0" y2="22"/></svg>')


def _bin_size(first: datetime, last: datetime) -> timedelta:
    span = last - first
    return next((b for b in _BINS if span / b < _MAX_BINS), _BINS[-1])


def _floor(when: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + size * ((when - epoch) // size)


def _label(when: datetime, size: timedelta) -> str:
    return when.strftime("%Y-%m-%d" if size >= timedelta(days=1) else "%Y-%m-%d %H:%M") + " UTC"


def timeline(points: Sequence[tuple[datetime, str]], undated: int = 0) -> str:
    """Decisions over time: one stacked bar per time bin (1 min .. 30 days, at most about
    60 bins), coloured by verdict, with the bin size, the first and last bin and the
    tallest bar's count written out. ``undated``: decisions without a readable time."""
    if not points:
        return f'<p class="none">no dated decisions{f" ({undated:,} without a readable timestamp)" if undated else ""}</p>'
    try:
        return _timeline(points, undated)
    except OverflowError:  # a forged timestamp near year 1 or 9999: bins fall off the calendar
        first, last = min(w for w, _ in points), max(w for w, _ in points)
        return (f'<p class="none">decisions over time not drawn: the timestamps span {html.escape(first.isoformat())} '
                f"to {html.escape(last.isoformat())}, beyond what the calendar can bin (a forged or broken clock?)</p>")


def _timeline(points: Sequence[tuple[datetime, str]], undated: int) -> str:
    utc = sorted((w.astimezone(timezone.utc), v) for w, v in points)
    size = _bin_size(utc[0][0], utc[-1][0])
    start = _floor(utc[0][0], size)
    bins: dict[int, Counter[str]] = {}
    for when, v in utc:
        bins.setdefault((when - start) // size, Counter())[v if v in ORDER else "unknown"] += 1
    count = max(bins) + 1
    tallest = max(sum(c.values()) for c in bins.values())
    width, height, bw = 1000, 160, 1000 / max(count, 12)  # a lone bar stays a bar
    bars = []
    for k, c in sorted(bins.items()):
        y = float(height)
        stamp = _label(start + size * k, size)
        for v in ORDER:
            if c[v]:
                h = (height - 10) * c[v] / tallest
                y -= h
                bars.append(f'<rect class="v-{v}" x="{k * bw + bw * 0.1:.1f}" y="{y:.1f}" width="{bw * 0.8:.1f}" '
                            f'height="{h:.1f}"><title>{html.escape(stamp)}: {c[v]:,} {v}</title></rect>')
    step = _STEPS[_BINS.index(size)]
    caption = (f"{len(utc):,} decisions, one bar per {step}; from {_label(start, size)} to "
               f"{_label(start + size * (count - 1), size)}; tallest bar {tallest:,}"
               + (f"; {undated:,} without a readable timestamp (not drawn)" if undated else ""))
    return (f'<figure class="timeline"><svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
            f'aria-label="decisions over time">'
            f'<line class="axis" x1="0" x2="{width}" y1="{height}" y2="{height}"/>{"".join(bars)}</svg>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
