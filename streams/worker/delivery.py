"""Offsets are committed only after the records sent before the commit are acknowledged.

Faust commits a source offset after ``producer.flush()``, but that flush does not wait for the
records still in Faust's send buffer: ``ProducerBuffer.flush`` gives up as soon as one record takes
longer than 100 ms to leave (a slow round trip, a full batch), and the record being handed to the
client is not counted as buffered at all. Table writes go through that buffer (``send_changelog``
is ``send_soon``), so a worker could commit a facts offset whose changelog chunks the broker did
not have yet; killed then, the chunks were lost while their facts were never read again, and the
figures ended short. Here a flush also waits for every record put in the buffer before it began.
This is plain Kafka (no broker quirk): it applies against Kafka as well.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class UnackedSends:
    """The records handed to the send buffer and not acknowledged (or failed) yet."""

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[Any]] = set()

    def add(self, future: asyncio.Future[Any]) -> None:
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def __len__(self) -> int:
        return len(self._futures)

    def so_far(self) -> set[asyncio.Future[Any]]:
        return set(self._futures)

    @staticmethod
    async def settled(futures: set[asyncio.Future[Any]]) -> None:
        """Until each of ``futures`` is acknowledged or has failed (a failure is the sender's to
        report; what matters here is that none is still on its way)."""
        if futures:
            await asyncio.wait(futures)


class AckedFlushProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    """Faust's aiokafka producer whose ``flush()`` (which precedes every offset commit) returns
    only once every record sent before it is acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacked = UnackedSends()

    def send_soon(self, fut: Any) -> None:
        self.unacked.add(fut)
        super().send_soon(fut)

    async def flush(self) -> None:
        sent_before = self.unacked.so_far()
        await super().flush()
        await self.unacked.settled(sent_before)


def install(app: Any) -> None:
    """Give a ``faust.App`` the producer whose flush waits for acknowledgements."""
    app.transport.Producer = AckedFlushProducer
