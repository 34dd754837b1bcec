"""PageMap (server/vm/_pagemap.py, in C: native/server/pagemap.c) against a plain set of pages."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rxkernel.server.vm._pagemap import CHUNK_PAGES, PageMap

# Ranges cluster around chunk boundaries, where the C code changes chunk.
_EDGES = [0, 1, CHUNK_PAGES - 3, CHUNK_PAGES, CHUNK_PAGES + 2, 2 * CHUNK_PAGES - 1, 3 * CHUNK_PAGES + 5]
page = st.one_of(st.sampled_from(_EDGES), st.integers(0, 4 * CHUNK_PAGES))
span = st.tuples(page, st.integers(0, 3 * CHUNK_PAGES)).map(lambda t: (t[0], t[0] + t[1]))


def model_runs(model: set[int], start: int, end: int) -> list[tuple[int, int, bool]]:
    out: list[tuple[int, int, bool]] = []
    for p in range(start, end):
        v = p in model
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], p + 1, v)
        else:
            out.append((p, p + 1, v))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), span), min_size=1, max_size=12), span)
def test_a_page_map_is_the_set_it_was_told(ops: list[tuple[bool, tuple[int, int]]], probe: tuple[int, int]) -> None:
    m, model = PageMap(), set[int]()
    for value, (s, e) in ops:
        before = len(model)
        if value:
            model.update(range(s, e))
        else:
            model.difference_update(range(s, e))
        assert m.set_range(s, e, value) == abs(len(model) - before)
        assert m.count_set == len(model)
    s, e = probe
    assert m.count(s, e) == sum(1 for p in range(s, e) if p in model)
    window = (s, min(e, s + 2000))  # runs of the model are built page by page: keep it short
    assert list(m.runs(*window)) == model_runs(model, *window)
    assert m.runs_of(*window) == [(a, b) for a, b, v in model_runs(model, *window) if v]
    assert all(m.get(p) == (p in model) for p in (s, e, *_EDGES))
    chunks = {p // CHUNK_PAGES for p in model}
    assert m.memory_bytes == len(chunks) * CHUNK_PAGES  # an emptied chunk is given back


def test_more_runs_than_one_call_returns_are_all_found() -> None:
    m = PageMap()
    for p in range(0, 1000, 2):  # 1000 runs of one page: many calls into C
        m.set_range(p, p + 1, True)
    runs = list(m.runs(0, 1000))
    assert len(runs) == 1000 and all(r == (p, p + 1, p % 2 == 0) for p, r in enumerate(runs))


def test_out_of_range_is_refused_and_changes_nothing() -> None:
    m = PageMap()
    m.set_range(5, 6, True)
    for s, e in ((1 << 28, (1 << 28) + 1), (10, 5)):
        try:
            m.set_range(s, e, True)
        except ValueError as err:
            assert "outside a page map" in str(err)
        else:
            raise AssertionError("accepted")
    assert m.count_set == 1 and list(m.runs(0, 8)) == [(0, 5, False), (5, 6, True), (6, 8, False)]
