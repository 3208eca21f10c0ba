"""A TCP relay to a server that a test can cut: :meth:`Relay.cut` drops every
connection through it and refuses new ones until :meth:`Relay.restore`. That is how a
network outage looks to one client, without touching the shared server.
:meth:`Relay.freeze` instead keeps the connections open and drops what they carry,
as a pulled cable does (a half-open connection): only heartbeats can notice."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Relay"]


class Relay:
    def __init__(self, target: int, host: str = "127.0.0.1", listen: str = "127.0.0.1") -> None:
        self.target = (host, target)
        self.listen = listen
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen (on the same port again after a cut); return the port."""
        self._server = await asyncio.start_server(
            self._link, self.listen, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def freeze(self) -> None:
        """Drop, from now on, everything the open connections carry (both ways),
        closing none of them; new connections are relayed as usual."""
        self._frozen.update(self._links)

    async def restore(self) -> None:
        await self.start()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(
            _pump(reader, up_writer, self._frozen),
            _pump(up_reader, writer, self._frozen),
            return_exceptions=True,
        )
        for end in (writer, up_writer):
            self._links.discard(end)
            self._frozen.discard(end)
            end.transport.abort()


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    frozen: set[asyncio.StreamWriter],
) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            if writer in frozen:
                continue
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
