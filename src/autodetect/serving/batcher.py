"""Dynamic micro-batching across concurrent requests.

Each request's image is decoded and prepared on a thread pool (never on the event loop), then
queued. One loop takes batches off the queue and runs them on a single inference thread. A batch
goes as soon as it is full, or no other request is still decoding (nothing more is about to
arrive, so waiting would only add latency), or its oldest item has waited max_wait."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from autodetect.serving.errors import NotReady

Predict = Callable[[list[Any], Any], list[Any]]


def should_dispatch(queued: int, decoding: int, waited_s: float, max_batch_size: int, max_wait_s: float) -> bool:
    """Whether to run the queued items now rather than wait for more."""
    return queued >= max_batch_size or decoding == 0 or waited_s >= max_wait_s


def take_batch(queue: deque, max_batch_size: int) -> list:
    """Up to max_batch_size items, oldest first, that share the oldest item's options (the rest keep their place)."""
    options = queue[0].options
    batch, rest = [], []
    while queue and len(batch) < max_batch_size:
        item = queue.popleft()
        (batch if item.options == options else rest).append(item)
    queue.extendleft(reversed(rest))
    return batch


@dataclass
class _Item:
    payload: Any
    options: Hashable
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(self, predict: Predict, max_batch_size: int, max_wait_s: float, decode_threads: int,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None):
        self._predict, self._on_batch = predict, on_batch
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._inference_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._queue: deque[_Item] = deque()
        self._decoding = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        """Prepared items waiting for the model."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def submit(self, prepare: Callable[[], Any], options: Hashable) -> Any:
        """Run prepare() on a decode thread, then queue its payload; the result for that payload."""
        if self._task is None or self._task.done():
            raise NotReady("the server is not accepting requests (starting or stopping)")
        loop = asyncio.get_running_loop()
        self._decoding += 1
        try:
            payload = await loop.run_in_executor(self._decode_pool, prepare)
        finally:
            self._decoding -= 1
            self._wakeup.set()
        item = _Item(payload, options, loop.create_future())
        self._queue.append(item)  # in the same step as the decrement: the loop never sees neither
        return await item.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            while True:
                waited = time.monotonic() - self._queue[0].queued_at
                if should_dispatch(len(self._queue), self._decoding, waited, self.max_batch_size, self.max_wait_s):
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self.max_wait_s - waited)
                except TimeoutError:
                    pass
            batch = [item for item in take_batch(self._queue, self.max_batch_size) if not item.future.done()]
            if not batch:  # every client of this batch went away
                continue
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(
                    self._inference_pool, self._predict, [item.payload for item in batch], batch[0].options)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._on_batch(len(batch), time.monotonic() - started)
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)

    async def stop(self) -> None:
        """Stop after the server has drained its requests; anything still queued is refused."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(NotReady("the server is stopping"))
        self._queue.clear()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=True)
