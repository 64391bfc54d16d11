"""The banded knapsack DP makes exactly the dense DP's choice (same optimum, same tie-break)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.strategies.knapsack import _dp_select, _dp_select_full


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(-5, 60)), max_size=24), st.integers(0, 300),
       st.booleans())
def test_banded_dp_equals_dense_dp(items: list[tuple[int, int]], cap: int, ties: bool) -> None:
    ww = np.array([w for w, _ in items], dtype=np.int64)
    cc = np.array([(c // 10 if ties else c) for _, c in items], dtype=np.int64)
    cap = min(cap, int(ww.sum()) + 2)
    assert _dp_select(cc, ww, cap).tolist() == _dp_select_full(cc, ww, cap).tolist()


def test_banded_dp_on_seeded_cases() -> None:
    rng = np.random.default_rng(7)
    for t in range(3000):
        n = int(rng.integers(1, 40))
        ww = rng.integers(1, int(rng.integers(2, 80)), n)
        cc = rng.integers(1, int(rng.integers(2, 40)), n) * (1 if t % 2 else 5)
        cap = int(rng.integers(0, int(ww.sum()) + 3))
        got, want = _dp_select(cc, ww, cap), _dp_select_full(cc, ww, cap)
        assert got.tolist() == want.tolist(), (cc.tolist(), ww.tolist(), cap)
        assert int(ww[got].sum()) <= cap
