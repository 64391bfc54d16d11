"""An expanding-core dynamic program for the 0/1 knapsack (after Pisinger's ``minknap``).

``max sum(c_j x_j) s.t. sum(w_j x_j) <= C`` with integer ``c_j > 0``, ``0 < w_j <= C``.
The items are sorted by ``c/w`` (highest first) and the *break solution* takes every item
before the break item ``b``. The DP starts from that one state and lets the items nearest
the break change, one at a time and alternating sides, as in D. Pisinger, "A minimal
algorithm for the 0-1 knapsack problem", Operations Research 45 (1997) 758-767:

* a right item ``t >= b`` (out in the break solution) may be *added*, a left item
  ``s < b`` (in) may be *removed*; a state is ``(weight, profit)`` of a whole solution,
  states over the capacity are kept (a later removal can bring them back);
* states are kept sorted by weight and *undominated* (no other state weighs no more
  and earns at least as much), so their number stays far below ``C``;
* a state's upper bound is its LP bound over the items not yet processed: under the
  capacity it may gain at most ``r_t`` per free token (``t`` the next right item: every
  later one has a ratio no higher); over it, it must lose at least ``r_s`` per token of
  excess (``s`` the next left item: every earlier one has a ratio no lower). A state
  whose bound is below ``lb + 1`` cannot lead to a better integer answer and is dropped;
* an item whose Dembo-Hammer bound ``L - |c_j - r w_j|`` (``L`` Dantzig's bound,
  ``r`` the break ratio) is below ``lb + 1`` keeps its break-solution value in every better
  answer, so it is not branched on (tested again whenever ``lb`` improves);
* identical items (same profit and weight) are branched on in binary groups
  (1, 2, 4, ..., rest copies), so ``m`` copies cost ``log2(m)`` steps;
* with a :class:`Cardinality` bound (combo's cardinality cut, for the strongly
  correlated class where Dantzig's bound is weak), every state also carries its item
  count and is bounded by the Lagrangian of the cut, and an item is fixed — or forced to
  flip — by its Lagrangian reduced cost;
* it ends when no state is left (the incumbent is optimal) or every item has been
  processed (the best feasible state is optimal).

Either way the answer is *proven*; the result says how (items branched on, states, the
bound). The DP gives up (``None``) past ``max_states`` states or the wall-clock
``deadline``: the caller then falls back to CP-SAT for the core.

Bounds are computed in floating point with a margin far above its rounding error, and
only ever to *drop* a state or an item, so rounding can cost time, never correctness;
profits and weights themselves stay exact 64-bit integers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

#: Give up (return None) when the state list grows past this many states.
MAX_STATES = 1 << 20


@dataclass(frozen=True, slots=True)
class CoreResult:
    """The proven optimum ``x`` (over the input items), its profit, and the trace."""

    x: np.ndarray
    profit: int
    items_branched: int  # DP steps: chunks (groups of identical items) branched on
    items_skipped: int  # chunks never branched on (fixed by a bound)
    max_states: int
    found_by: str  # "incumbent" (the start solution was optimal) or "dp"


def _margin(term: np.ndarray | float) -> np.ndarray | float:
    """Slack on a float bound term: far above float64 rounding, far below one unit."""
    return 1e-9 * np.abs(term) + 1e-6


@dataclass(frozen=True, slots=True)
class Cardinality:
    """A Lagrangian bound with the cardinality cut ``sum x <= k_max`` (every feasible
    answer has at most ``k_max`` items: the ``k_max`` lightest fill the capacity).

    For any ``rho, lam >= 0`` and any feasible ``x``:
    ``c @ x <= rho * C + lam * k_max + sum_j max(0, c_j - rho * w_j - lam)``. ``rho, lam``
    are chosen to make it small (the LP dual of the knapsack LP with the cut, found by
    bisection on ``lam``); on strongly correlated items (``c = a w + b``) it is far
    tighter than Dantzig's bound, which ignores that each item also spends one of the
    ``k_max`` places.
    """

    k_max: int
    rho: float
    lam: float
    bound: float


def _lagrangian(c: np.ndarray, w: np.ndarray, cap: int, k_max: int, rho: float) -> tuple[float, float]:
    """The best ``lam`` for this ``rho`` and the bound: ``lam`` is the ``k_max``-th largest
    ``c_j - rho w_j`` (0 when that is negative, or when every item fits the count)."""
    g = c - rho * w
    lam = 0.0
    if k_max < len(g):
        lam = max(0.0, float(np.partition(g, len(g) - k_max - 1)[len(g) - k_max - 1]))
    return lam, rho * cap + lam * k_max + float(np.maximum(g - lam, 0.0).sum())


def cardinality_bound(c: np.ndarray, w: np.ndarray, cap: int, rho_max: float, *,
                      k_max: int | None = None, iterations: int = 40) -> Cardinality:
    """The cut's ``k_max`` and good multipliers (see :class:`Cardinality`): the bound is
    convex in ``rho`` once ``lam`` is optimal for it, so a golden-section search over
    ``rho`` in ``[0, rho_max]`` (``rho_max``: Dantzig's break ratio, the optimum without the
    cut) finds them with one partial sort per step. Any ``rho, lam >= 0`` give a valid
    bound; the search only makes it tight."""
    if k_max is None:
        k_max = int(np.searchsorted(np.cumsum(np.sort(w)), cap, side="right"))
    lam, u = _lagrangian(c, w, cap, k_max, rho_max)
    best = Cardinality(k_max, rho_max, lam, u)
    lo, hi = 0.0, rho_max
    phi = (np.sqrt(5.0) - 1) / 2
    x1, x2 = hi - phi * (hi - lo), lo + phi * (hi - lo)
    (l1, u1), (l2, u2) = _lagrangian(c, w, cap, k_max, x1), _lagrangian(c, w, cap, k_max, x2)
    for _ in range(iterations):
        if u1 <= u2:
            hi, x2, l2, u2 = x2, x1, l1, u1
            x1 = hi - phi * (hi - lo)
            l1, u1 = _lagrangian(c, w, cap, k_max, x1)
        else:
            lo, x1, l1, u1 = x1, x2, l2, u2
            x2 = lo + phi * (hi - lo)
            l2, u2 = _lagrangian(c, w, cap, k_max, x2)
    for rho, lam, u in ((x1, l1, u1), (x2, l2, u2)):
        if u < best.bound:
            best = Cardinality(k_max, rho, lam, u)
    return best


def solve(c: np.ndarray, w: np.ndarray, cap: int, order: np.ndarray, b: int, incumbent: np.ndarray,
          dantzig: float, *, card: Cardinality | None = None, max_states: int = MAX_STATES,
          deadline: float | None = None) -> CoreResult | None:
    """Maximise ``c @ x`` under ``w @ x <= cap``.

    ``order`` sorts the items by ``c/w`` descending, ``b`` is the break position in it
    (``w[order[:b]].sum() <= cap < w[order[:b + 1]].sum()``), ``incumbent`` a feasible
    choice (its profit is the first lower bound), ``dantzig`` Dantzig's upper bound and
    ``card`` an optional cardinality bound (tighter state and item bounds).
    """
    n = len(order)
    ratio = c / w
    rb = float(ratio[order[b]]) if b < n else 0.0
    need0 = int(c[incumbent].sum()) + 1 - float(_margin(dantzig))
    sides = [_chunks(order[b:], True, c, w, ratio, rb, dantzig, card, need0),
             _chunks(order[:b][::-1], False, c, w, ratio, rb, dantzig, card, need0)]
    # The branching sequence: alternately the next right chunk (added) and the next left
    # one (removed), nearest the break first.
    nr, nl = len(sides[0].w), len(sides[1].w)
    m = min(nr, nl)
    side_of = np.concatenate((np.tile([0, 1], m), np.full(nr - m, 0), np.full(nl - m, 1))).astype(np.int64)
    rank = np.concatenate((np.repeat(np.arange(m), 2), np.arange(m, nr), np.arange(m, nl))).astype(np.int64)
    ns = len(side_of)

    def col(name: str) -> np.ndarray:
        r_, l_ = getattr(sides[0], name), getattr(sides[1], name)
        out = np.empty(ns, dtype=r_.dtype)
        out[side_of == 0], out[side_of == 1] = r_, l_
        return out

    change, forced_bound, e = col("change"), col("forced_bound"), col("e")
    qw, qc, qk, nxt = col("w"), col("c"), col("k"), col("next_ratio")
    adds = side_of == 0
    rsuf = np.concatenate((np.cumsum(e[::-1])[::-1], [0.0]))
    lb = int(c[incumbent].sum())
    best: tuple[int, int, bool] | None = None  # (step, previous index, toggled); None: the incumbent
    W = np.array([int(w[order[:b]].sum())], dtype=np.int64)
    P = np.array([int(c[order[:b]].sum())], dtype=np.int64)
    N = np.array([b], dtype=np.int64)
    # history[k]: for each state after step k, its state index after step k - 1 and
    # whether step k toggled its item (hist_item[k]).
    hist_src: list[np.ndarray] = []
    hist_flag: list[np.ndarray] = []
    hist_item: list[int] = []
    # The ratio bounding every right (left) chunk not yet branched on.
    rt = float(sides[0].ratio0)
    rs = float(sides[1].ratio0)  # -1: no left chunk left (states over the capacity are dead)
    peak = 1
    margin = float(_margin(dantzig))
    i = 0
    todo = cursor_filter(np.arange(ns), change, forced_bound, lb + 1 - margin)
    cursor = 0
    while len(W):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        if cursor >= len(todo):
            break  # every chunk processed: the best feasible state is in lb already
        i = int(todo[cursor])
        cursor += 1
        adding = bool(adds[i])
        if adding:
            rt = float(nxt[i])
        else:
            rs = float(nxt[i])
        k = len(W)
        sign = 1 if adding else -1
        W2, P2, N2 = W + sign * int(qw[i]), P + sign * int(qc[i]), N + sign * int(qk[i])
        if forced_bound[i] < lb + 1 - margin:  # every better answer toggles it: only toggled states go on
            i += 1
            if change[i - 1] < lb + 1 - margin:
                continue  # nothing better exists either way: lb is optimal once the states die out
            allW, allP, allN = W2, P2, N2
            srt = np.arange(k, 2 * k)
        else:
            i += 1
            # Merge the two weight-sorted lists (a stable sort of two sorted runs is one
            # merge pass), then drop dominated states: profit must rise strictly with weight.
            allW = np.concatenate((W, W2))
            srt = np.argsort(allW, kind="stable")
            allW = allW[srt]
            allP = np.concatenate((P, P2))[srt]
            allN = np.concatenate((N, N2))[srt]
            keep = np.empty(2 * k, dtype=bool)
            keep[0] = True
            np.greater(allP[1:], np.maximum.accumulate(allP)[:-1], out=keep[1:])
            keep[:-1] &= ~((allW[:-1] == allW[1:]) & (allP[:-1] < allP[1:]))
            allW, allP, allN, srt = allW[keep], allP[keep], allN[keep], srt[keep]
        last = int(np.searchsorted(allW, cap, side="right")) - 1
        if last >= 0 and int(allP[last]) > lb:  # undominated: the heaviest feasible earns most
            lb = int(allP[last])
            best = (len(hist_item), int(srt[last]) % k, bool(srt[last] >= k))
            todo = np.concatenate((todo[:cursor], cursor_filter(todo[cursor:], change, forced_bound, lb + 1 - margin)))
        hist_item.append(i - 1)
        # Bounds over the chunks still to come: rt / rs bound the ratio of every one of them.
        slack = (cap - allW).astype(np.float64)
        base = (allP - lb).astype(np.float64)
        if rs >= 0:
            term = slack * np.where(slack >= 0, rt, rs)
            alive = base + term >= 1 - (1e-9 * np.abs(term) + 1e-6)
        else:
            term = slack * rt
            alive = (base + term >= 1 - (1e-9 * np.abs(term) + 1e-6)) & (slack >= 0)
        if card is not None:
            rest = float(rsuf[i])
            cterm = card.rho * slack + card.lam * (card.k_max - allN) + rest
            alive &= base + cterm >= 1 - (1e-9 * (np.abs(card.rho * slack) + card.lam * card.k_max + rest) + 1e-6)
        W, P, N, srt = allW[alive], allP[alive], allN[alive], srt[alive]
        hist_src.append((srt % k).astype(np.int64))
        hist_flag.append(srt >= k)
        peak = max(peak, len(W))
        if len(W) > max_states:
            return None
    x = incumbent.copy()
    if best is not None:
        x = np.zeros(len(c), dtype=bool)
        x[order[:b]] = True
        step, idx, flag = best
        for pos in _toggled(hist_src[:step], hist_flag[:step], hist_item[:step], idx,
                            hist_item[step] if flag else -1):
            side = sides[int(side_of[pos])]
            q = int(rank[pos])
            x[side.items[int(side.start[q]):int(side.start[q] + side.k[q])]] ^= True
    profit = int(c[x].sum())
    if profit != lb or int(w[x].sum()) > cap:  # the reconstruction is the state it came from
        raise AssertionError(f"minknap: rebuilt solution {profit} != state {lb}")
    return CoreResult(x, profit, len(hist_item), ns - len(hist_item), peak, "incumbent" if best is None else "dp")


@dataclass(frozen=True, slots=True)
class _Side:
    """The chunks of one side of the break, nearest first: identical items (same profit
    and weight) in binary-sized groups (1, 2, 4, ..., rest: every count of copies is a
    sum of distinct groups), so ``m`` copies cost ``log2(m)`` DP steps, not ``m``."""

    items: np.ndarray  # the side's items still worth branching on, nearest the break first
    start: np.ndarray  # chunk q is items[start[q]:start[q] + k[q]]
    k: np.ndarray
    w: np.ndarray
    c: np.ndarray
    change: np.ndarray  # a bound on every answer that toggles the chunk
    forced_bound: np.ndarray  # a bound on every answer that does not (inf: none known)
    e: np.ndarray  # the chunk's Lagrangian gain if toggled (0 without a cardinality bound)
    next_ratio: np.ndarray  # the ratio of the chunk after it (0 right, -1 left: none)
    ratio0: float  # the ratio of the first chunk (or the "none" value)


def _chunks(items: np.ndarray, adding: bool, c: np.ndarray, w: np.ndarray, ratio: np.ndarray, rb: float,
            dantzig: float, card: Cardinality | None, need: float) -> _Side:
    red = np.abs(c[items] - rb * w[items])
    change = dantzig - red
    forced = np.full(len(items), np.inf)
    e = np.zeros(len(items))
    if card is not None:
        d = c[items] - card.rho * w[items] - card.lam
        ad = np.abs(d)
        with_lp = (d > 0) != adding  # the Lagrangian optimum keeps the break value
        change = np.where(with_lp, np.minimum(change, card.bound - ad), np.minimum(change, card.bound))
        forced = np.where(with_lp, np.inf, card.bound - ad)
        e = np.maximum(d, 0.0) if adding else np.maximum(-d, 0.0)
    keep = (change >= need) | (forced < need)  # the others keep their break value in every better answer
    it, red, forced, e = items[keep], red[keep], forced[keep], e[keep]
    d_abs = np.abs(c[it] - card.rho * w[it] - card.lam) if card is not None else None
    cw, ww = c[it], w[it]
    n = len(it)
    if n > 1:
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = (cw[1:] != cw[:-1]) | (ww[1:] != ww[:-1])
        run_start = np.flatnonzero(new_run)
    else:
        run_start = np.arange(n)
    run_len = np.diff(np.append(run_start, n))
    if n and run_len.max() > 1:
        starts: list[int] = []
        sizes: list[int] = []
        for s0, m in zip(run_start.tolist(), run_len.tolist()):
            p = 1
            while m > 0:
                take = min(p, m)
                starts.append(s0)
                sizes.append(take)
                s0, m, p = s0 + take, m - take, 2 * p
        start, k = np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64)
    else:
        start, k = run_start.astype(np.int64), np.ones(n, dtype=np.int64)
    first = it[start] if n else it
    kf = k.astype(np.float64)
    ch = dantzig - kf * red[start] if n else np.zeros(0)
    fb = np.where(k == 1, forced[start], np.inf) if n else np.zeros(0)
    if card is not None and d_abs is not None and n:
        with_lp = np.isinf(forced[start])
        ch = np.where(with_lp, np.minimum(ch, card.bound - kf * d_abs[start]), np.minimum(ch, card.bound))
    none = 0.0 if adding else -1.0
    r = ratio[first]
    nxt = np.append(r[1:], none)
    return _Side(it, start, k, w[first] * k, c[first] * k, ch, fb, e[start] * kf if n else e, nxt,
                 float(r[0]) if n else none)


def cursor_filter(rest: np.ndarray, change: np.ndarray, forced_bound: np.ndarray, need: float) -> np.ndarray:
    """The positions of ``rest`` still worth branching on once better answers need ``need``:
    those that may change, or must."""
    out: np.ndarray = rest[(change[rest] >= need) | (forced_bound[rest] < need)]
    return out


def _toggled(hist_src: list[np.ndarray], hist_flag: list[np.ndarray], hist_item: list[int],
             idx: int, first: int) -> list[int]:
    """The items toggled on the way to a state: ``first`` (or -1) at the current step,
    then back through the history from state ``idx`` of the previous step."""
    out = [first] if first >= 0 else []
    for k in range(len(hist_item) - 1, -1, -1):
        if hist_flag[k][idx]:
            out.append(hist_item[k])
        idx = int(hist_src[k][idx])
    return out
