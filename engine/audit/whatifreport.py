"""The what-if section of the HTML report (``ctxbudget audit report --whatif DIFF``).

What goes in: a what-if diff as ``ctxbudget audit whatif --out`` writes it (JSON, read
as a mapping: it may come from another machine, so every value is hostile input and
escaped, and a missing field shows as ``-``). What comes out: one ``<section>`` of
HTML: the new policy, whether the run was intact, one row per product and revision
(decisions, changed, newly infeasible, items lost and gained with their reasons, tokens
and objective before and after, solver outcomes), and the first changed decision ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .reportcard import as_map, esc, num

__all__ = ["whatif_html"]

#: Changed decision ids listed in the section (all are counted).
IDS_SHOWN = 20


def _counts(value: Any) -> str:
    items = sorted(as_map(value).items(), key=lambda kv: (-kv[1] if isinstance(kv[1], int) else 0, str(kv[0])))
    return ", ".join(f"{esc(k)} {num(v)}" for k, v in items) or "-"


def _delta(block: Mapping[str, Any]) -> str:
    return f"{num(block.get('before'))} &rarr; {num(block.get('after'))} ({num(block.get('delta'))})"


def _row(g: Mapping[str, Any]) -> str:
    items, tokens, objective = as_map(g.get("items")), as_map(g.get("tokens")), as_map(g.get("objective"))
    return (f"<tr><td>{esc(g.get('product'))}</td><td>{esc(g.get('revision'))}</td>"
            f"<td class=n>{num(g.get('decisions'))}</td><td class=n>{num(g.get('changed'))}</td>"
            f"<td class=n>{num(g.get('newly_infeasible'))}</td>"
            f"<td>-{num(items.get('lost'))} ({_counts(items.get('lost_by_reason'))}); "
            f"+{num(items.get('gained'))} ({_counts(items.get('gained_by_reason'))})</td>"
            f"<td class=n>{_delta(tokens)}</td><td class=n>{_delta(objective)}</td>"
            f"<td>{_counts(g.get('solver_outcomes'))}</td></tr>")


def whatif_html(diff: Mapping[str, Any]) -> str:
    """The section for ``diff`` (see the module docstring)."""
    policy = as_map(diff.get("policy"))
    groups = [as_map(g) for g in diff.get("groups") or [] if isinstance(g, Mapping)]
    ids = [i for i in diff.get("changed_decision_ids") or [] if isinstance(i, str)]
    total = as_map(diff.get("total"))
    intact = diff.get("intact") is True
    problems = [p for p in diff.get("problems") or [] if isinstance(p, str)]
    shown = ", ".join(f"<code>{esc(i)}</code>" for i in ids[:IDS_SHOWN])
    more = f" and {len(ids) - IDS_SHOWN:,} more (the diff's changed_decision_ids)" if len(ids) > IDS_SHOWN else ""
    return (
        "<section class=whatif id=whatif><h2>what-if: "
        f"{esc(policy.get('name'))} revision {esc(policy.get('revision'))}</h2>"
        f"<p class=meta>policy digest <code>{esc(policy.get('digest'))}</code> &middot; "
        f"{num(total.get('decisions'))} decisions replayed, {num(total.get('changed'))} would change &middot; "
        f"<b class={'ok' if intact else 'failed'}>{'intact' if intact else 'NOT INTACT'}</b></p>"
        + "".join(f"<p class=failed>{esc(p)}</p>" for p in problems[:20])
        + "<table><tr><th>product</th><th>recorded revision</th><th class=n>decisions</th><th class=n>changed</th>"
        "<th class=n>newly infeasible</th><th>items lost; gained (by reason)</th><th class=n>tokens</th>"
        "<th class=n>objective</th><th>solver before&rarr;after</th></tr>"
        + "".join(_row(g) for g in groups) + "</table>"
        + (f"<p>changed decisions: {shown}{more}</p>" if ids else "")
        + "</section>")
