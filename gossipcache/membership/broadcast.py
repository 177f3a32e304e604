"""The retransmit queue of member updates piggybacked on datagrams (SWIM's infection-style
dissemination; the ordering follows memberlist's TransmitLimitedQueue).

- Each update is sent ``retransmit_mult * ceil(log10(N + 1))`` times, then forgotten: with N
  members that many random forwards reach everyone with high probability.
- Least-transmitted updates go first, newest first among equals: fresh news spreads fastest.
  A heap of (transmits, -order) entries keeps that order, so a datagram pops only the updates it
  sends or passes over (sorting the whole queue per datagram cost ~1 ms at 4,096 updates).
- A newer update about a member replaces any queued one about the same member (only the latest
  state matters, and the older one would waste bytes).
- The queue is bounded; beyond the bound the most-transmitted (best spread) updates are dropped.
  Finding that update is O(log n) amortised: while the queue is at least half full, a heap of
  (transmits, order) snapshots is kept (stale ones skipped when popped, the heap rebuilt when it
  holds ``HEAP_SLACK_FACTOR`` times more entries than the queue); below half it is dropped, so a
  quiet queue pays nothing. (A scan of the whole queue per put made merging a 9,999-row
  push-pull take 10.8 s.)
"""

from __future__ import annotations

import heapq
import math

from ..errors import InvariantViolation


def retransmit_limit(retransmit_mult: int, member_count: int) -> int:
    """How many times one update is sent in a cluster of ``member_count`` members."""
    return retransmit_mult * math.ceil(math.log10(member_count + 1))


class _Queued:
    __slots__ = ("key", "encoded", "transmits", "order")

    def __init__(self, key: str, encoded: bytes, order: int) -> None:
        self.key = key
        self.encoded = encoded
        self.transmits = 0
        self.order = order


#: The eviction heap is rebuilt from the queue once it holds this many times more entries than
#: the queue has items (every take adds one entry per update sent), so it stays O(queue).
HEAP_SLACK_FACTOR = 4


class BroadcastQueue:
    """Encoded member updates waiting to be piggybacked, at most ``length_max`` of them."""

    def __init__(self, length_max: int) -> None:
        self.length_max = length_max
        self._items: dict[str, _Queued] = {}
        self._order = 0
        self.dropped = 0
        # Min-heap of (-transmits, order, key): its top is the update to drop first (most sent,
        # oldest among equals). An entry is stale once its item is gone or was sent again.
        # None while the queue is less than half full (built when it fills up).
        self._evict_heap: list[tuple[int, int, str]] | None = None
        # Min-heap of (transmits, -order, key): its top is the update to send first (least sent,
        # newest among equals); stale entries as above. ``take`` pops only what it sends or
        # skips, instead of sorting the whole queue for every datagram (~1 ms at 4,096).
        self._send_heap: list[tuple[int, int, str]] = []
        # No queued update is shorter than this (the shortest ever put; recomputed when the
        # send heap is rebuilt): once the budget left is below it, nothing more can fit.
        self._size_floor = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, encoded: bytes) -> None:
        """Queue ``encoded`` (one update about member ``key``), replacing any older one."""
        self._order += 1
        self._items.pop(key, None)
        self._items[key] = item = _Queued(key, encoded, self._order)
        self._push_heap(item)
        heapq.heappush(self._send_heap, (0, -item.order, key))
        if not self._size_floor or len(encoded) < self._size_floor:
            self._size_floor = len(encoded)
        if len(self._items) > self.length_max:
            del self._items[self._pop_worst()]
            self.dropped += 1
        self._compact_send_heap()

    def _push_heap(self, item: _Queued) -> None:
        heap = self._evict_heap
        if heap is None:
            return
        if len(heap) >= HEAP_SLACK_FACTOR * (len(self._items) + 16):
            self._rebuild_heap()  # it holds ``item`` too
            return
        heapq.heappush(heap, (-item.transmits, item.order, item.key))

    def _rebuild_heap(self) -> list[tuple[int, int, str]]:
        heap = [(-i.transmits, i.order, i.key) for i in self._items.values()]
        heapq.heapify(heap)
        self._evict_heap = heap
        return heap

    def _pop_worst(self) -> str:
        """Key of the most-transmitted update (the oldest among equals), skipping stale entries."""
        heap = self._evict_heap
        if heap is None:  # the queue just filled up: O(n) once per fill from half to full
            heap = self._rebuild_heap()
        while True:
            negative_transmits, order, key = heapq.heappop(heap)
            item = self._items.get(key)
            if item is not None and item.order == order and item.transmits == -negative_transmits:
                return key

    def _compact_send_heap(self) -> None:
        """Rebuild the send heap, one entry per queued update, once stale entries outnumber
        the queue several times over (every put and every send files a new entry)."""
        if len(self._send_heap) >= HEAP_SLACK_FACTOR * (len(self._items) + 16):
            heap = [(i.transmits, -i.order, i.key) for i in self._items.values()]
            heapq.heapify(heap)
            self._send_heap = heap
            self._size_floor = min((len(i.encoded) for i in self._items.values()), default=0)

    def take(self, budget_bytes: int, transmit_limit: int) -> list[bytes]:
        """Updates that fit in ``budget_bytes``, best first; each counts one transmission."""
        if not self._items or budget_bytes <= 0:
            return []
        chosen: list[bytes] = []
        heap = self._send_heap
        items = self._items
        passed_over: list[tuple[int, int, str]] = []  # too large for what is left: kept
        sent: list[_Queued] = []  # re-filed after the loop: each is sent once per take
        size_floor = self._size_floor
        while heap and budget_bytes >= size_floor:  # below the floor nothing fits: stop
            entry = heapq.heappop(heap)
            transmits, negative_order, key = entry
            item = items.get(key)
            if item is None or item.transmits != transmits or item.order != -negative_order:
                continue  # stale: replaced, dropped or sent since it was filed
            size = len(item.encoded)
            if size > budget_bytes:
                passed_over.append(entry)
                continue
            budget_bytes -= size
            chosen.append(item.encoded)
            item.transmits += 1
            if item.transmits >= transmit_limit:
                del items[key]
            else:
                sent.append(item)
            if budget_bytes < 16:  # no update is smaller than this: stop scanning
                break
        for entry in passed_over:
            heapq.heappush(heap, entry)
        for item in sent:
            self._push_heap(item)
            heapq.heappush(heap, (item.transmits, -item.order, item.key))
        self._compact_send_heap()
        if self._evict_heap is not None and len(self._items) < self.length_max // 2:
            self._evict_heap = None
        return chosen

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` unless the queue is within its bound and each item is filed
        under its own member, with a non-negative transmit count and an order already issued."""
        if len(self._items) > self.length_max:
            raise InvariantViolation(
                f"broadcast queue holds {len(self._items)} updates, bound {self.length_max}"
            )
        if self.dropped < 0:
            raise InvariantViolation(f"broadcast queue dropped count is {self.dropped}")
        for key, item in self._items.items():
            if item.key != key or item.transmits < 0 or not 0 < item.order <= self._order:
                raise InvariantViolation(
                    f"broadcast update filed under {key!r} is for {item.key!r}, "
                    f"sent {item.transmits} times, order {item.order} of {self._order}"
                )
