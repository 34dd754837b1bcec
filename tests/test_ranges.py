"""proto's RangeList, the one Python routine that cuts a mapping record (rxd's address spaces and
the stub library's local records both use it), against a model: a dict page → record label."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rxkernel.proto import RangeList

PAGE = 4096
PAGES = 64


@dataclasses.dataclass
class Rec:
    base: int
    length: int
    label: int  # what the record says about its range (rxd: the VMO and offset; here: a label)
    origin: int  # the address the label's range started at: a split keeps base - origin

    def split_at(self, at: int) -> Rec:
        upper = Rec(at, self.base + self.length - at, self.label, self.origin)
        self.length = at - self.base
        return upper


class RangeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ranges: RangeList[Rec] = RangeList()
        self.model: dict[int, tuple[int, int]] = {}  # page -> (label, origin)
        self.labels = 0

    @rule(first=st.integers(0, PAGES - 1), n=st.integers(1, 16))
    def insert(self, first: int, n: int) -> None:
        n = min(n, PAGES - first)
        self.labels += 1
        rec = Rec(first * PAGE, n * PAGE, self.labels, first * PAGE)
        pages = range(first, first + n)
        free = not any(p in self.model for p in pages)
        assert self.ranges.insert(rec) == free
        if free:
            self.model.update({p: (self.labels, first * PAGE) for p in pages})

    @rule(first=st.integers(0, PAGES - 1), n=st.integers(1, 24), drop=st.booleans())
    def cut(self, first: int, n: int, drop: bool) -> None:
        start, end = first * PAGE, (first + n) * PAGE
        inside = self.ranges.cut(start, end)
        assert [r.base for r in inside] == sorted(r.base for r in inside)
        covered = {p for r in inside for p in range(r.base // PAGE, (r.base + r.length) // PAGE)}
        assert covered == {p for p in self.model if first <= p < first + n}
        if drop:  # what unmap does with the pieces inside
            for r in inside:
                self.ranges.remove(r)
            for p in covered:
                del self.model[p]

    @invariant()
    def same_as_model(self) -> None:
        seen: dict[int, tuple[int, int]] = {}
        prev_end = -1
        for r in self.ranges:
            assert r.base >= prev_end and r.length > 0
            prev_end = r.base + r.length
            for p in range(r.base // PAGE, prev_end // PAGE):
                seen[p] = (r.label, r.origin)
                found = self.ranges.find(p * PAGE + 123)
                assert found is r
        assert seen == self.model
        assert len(self.ranges) == len(list(self.ranges))


TestRangeList = RangeMachine.TestCase
