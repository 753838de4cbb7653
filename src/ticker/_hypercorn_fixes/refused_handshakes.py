"""Fix 4: a refused handshake or request must end its connection (HTTP/1.1 and HTTP/2).

Upstream problem: when ``WSStream`` refuses a handshake itself (a malformed
upgrade request: 400; an unknown server name: 404) it answers with
``Connection: close`` and marks the stream closed, but never reports
``StreamClosed``, so the HTTP/1.1 connection is neither closed nor idle:
it stays open for ever. A client can hold sockets this way at no cost.
Report: docs/upstream/refused-websocket-handshake-never-closes.md (both parts)
The same holds for a plain HTTP request that ``HTTPStream`` refuses itself
(404 for a Host not in ``--server-name``; found while writing that report).
Tests: tests/integration/test_reliability.py::
           test_a_refused_websocket_handshake_closes_its_connection
       tests/integration/test_boundary.py::
           test_a_request_for_an_unknown_server_name_gets_404_and_its_connection_closes

Over HTTP/2 the refused stream closes while ``H2Protocol._handle_events`` is
still handling its request, which then reports the connection busy
(hypercorn/protocol/h2.py:253-254) with no stream left to end that: its
keep-alive timer never runs again. So after a batch of HTTP/2 events that
opened streams, a connection left without streams is reported idle again.
Test: tests/integration/test_http2.py::
          test_a_refused_http2_handshake_gets_400_and_its_connection_can_idle_out

And DATA for a stream the server has already closed (a websocket the server
closed, fix 7, to which the client still writes) is dropped: stock Hypercorn
looks the stream up without a guard and the KeyError ends the worker (found
by review). Report: docs/upstream/http2-data-after-stream-closed.md (known
upstream: #329, #197, open PRs #312, #334).
Test: tests/integration/test_http2.py::test_data_after_the_server_closed_the_stream_is_dropped
"""

from __future__ import annotations

import contextlib
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
from hypercorn.events import Updated
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.protocol.ws_stream import WSStream

from ._patching import Patch


def install(patch: Patch) -> None:
    handle_h2_events = H2Protocol._handle_events

    def ending_refusals(handle: Any) -> Any:
        async def patched_handle(self: WSStream | HTTPStream, event: Any) -> None:
            was_closed = self.closed
            await handle(self, event)
            # HTTPStream has no ``app_put`` until its app is spawned.
            refused = (
                isinstance(event, Request)
                and self.closed
                and getattr(self, "app_put", None) is None
            )
            if refused and not was_closed:
                await self.send(StreamClosed(stream_id=self.stream_id))

        return patched_handle

    async def patched_h2_events(self: H2Protocol, events: list[Any]) -> None:
        for event in events:  # one at a time: any of them may close a stream
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                # Data for a stream the server has closed (a websocket after
                # its close, fix 7): stock Hypercorn's KeyError would end the
                # whole worker. Drop it, keep the connection's window open,
                # and tell the client the stream is gone.
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                gone = h2.errors.ErrorCodes.STREAM_CLOSED
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.connection.reset_stream(event.stream_id, gone)
                await self._flush()
                continue
            await handle_h2_events(self, [event])
        opened = any(isinstance(event, h2.events.RequestReceived) for event in events)
        if opened and all(stream.idle for stream in self.streams.values()):
            await self.send(Updated(idle=True))

    patch(WSStream, "handle", ending_refusals(WSStream.handle))
    patch(HTTPStream, "handle", ending_refusals(HTTPStream.handle))
    patch(H2Protocol, "_handle_events", patched_h2_events)
