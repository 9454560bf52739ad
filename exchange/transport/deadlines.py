"""Request deadlines, grouped: one timer per distinct deadline, not one per request.

The requests of one auction (one per buyer) share its deadline, so they share a
`_DeadlineGroup` and its `call_at` timer; most settle long before it, and the timer is
cancelled when the last one does. When it fires, each request still on its connection
is handed to that connection's `deadline_passed` (connection.py), which times the caller
out and may keep listening for a late answer, under a deadline of its own.

The rooms above hand in connection.py's `_Connection` and `_Call`; this one needs of
them only what `_Carrier` and `_Timed` name.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class _Timed(Protocol):
    """A request waiting for its deadline."""

    group: _DeadlineGroup | None  # the deadline it waits for, if any


class _Carrier(Protocol):
    """The connection a timed request was sent on."""

    @property
    def _call(self) -> object: ...  # the request on it now, if any

    # Any: the connection takes its own request type, which this room does not name.
    def deadline_passed(self, call: Any) -> None: ...


class _DeadlineGroup:
    """The requests sharing one deadline, its timer, and how many have not settled."""

    __slots__ = ("fired", "members", "open", "timer", "when")

    def __init__(self, when: float, timer: asyncio.TimerHandle) -> None:
        self.when = when
        self.timer = timer
        self.members: list[tuple[_Carrier, _Timed]] = []
        self.open = 0
        self.fired = False


class _Deadlines:
    """One timer per distinct deadline: an auction's requests to all its buyers share
    one, instead of one timer each. Once every request of a group has settled (as most
    do, long before the deadline) its timer is cancelled and the group let go."""

    def __init__(self) -> None:
        self._groups: dict[float, _DeadlineGroup] = {}

    def add(self, when: float, connection: _Carrier, call: _Timed) -> None:
        group = self._groups.get(when)
        if group is None:
            timer = asyncio.get_running_loop().call_at(when, self._fire, when)
            group = self._groups[when] = _DeadlineGroup(when, timer)
        group.members.append((connection, call))
        group.open += 1
        call.group = group

    def settled(self, call: _Timed) -> None:
        """The call no longer needs its deadline (answered, failed or dropped)."""
        group = call.group
        if group is None:
            return
        call.group = None
        group.open -= 1
        if group.open or group.fired:
            return
        group.timer.cancel()
        del self._groups[group.when]

    def _fire(self, when: float) -> None:
        group = self._groups.pop(when)
        group.fired = True
        for connection, call in group.members:
            if call.group is group:
                call.group = None
            if connection._call is call:  # else answered in time
                connection.deadline_passed(call)

    def close(self) -> None:
        for group in self._groups.values():
            group.timer.cancel()
        self._groups.clear()
