"""One epoll set for every relay socket, watched by the event loop as a single file descriptor.

Registering a socket with the event loop (uvloop's add_reader/add_writer) costs four or five system
calls each time (libuv checks the fd, sets it non-blocking, and re-registers on every change); with
two sockets per connection that was a fifth of a short connection's cost. Here a socket is registered
once (one epoll_ctl), its interest changed with one epoll_ctl, and closing it drops it from the set.
Events are level-triggered and dispatched in batches from one loop callback.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

IN = select.EPOLLIN
OUT = select.EPOLLOUT
ERR = select.EPOLLERR
HUP = select.EPOLLHUP
BATCH = 1024  # events handled per wake-up of the event loop

Handler = Callable[[int], None]


class Poller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        loop.add_reader(self.ep.fileno(), self.dispatch)

    def register(self, fd: int, mask: int, handler: Handler) -> None:
        self.ep.register(fd, mask)
        self.handlers[fd] = handler

    def modify(self, fd: int, mask: int) -> None:
        self.ep.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        """Stop watching `fd` (it stays open): for a socket that hung up while nobody reads it, whose
        level-triggered HUP would otherwise be reported on every poll."""
        self.handlers.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except OSError:
            pass

    def forget(self, fd: int) -> None:
        """The socket is about to be closed: closing removes it from the epoll set by itself."""
        self.handlers.pop(fd, None)

    def dispatch(self) -> None:
        handlers = self.handlers
        for fd, events in self.ep.poll(0, BATCH):
            handler = handlers.get(fd)
            if handler is not None:  # an fd closed earlier in this batch
                handler(events)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.handlers.clear()
