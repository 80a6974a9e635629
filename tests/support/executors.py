"""An executor that counts what it was given: proof that work went to the CPU worker."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asyncjobs.core import cpu_worker


class CountingExecutor(ThreadPoolExecutor):
    """A one-thread pool standing in for the worker process, counting submissions."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        # The worker's start-up submission is not work handed to it.
        if fn is not cpu_worker.warm_up:
            self.submitted += 1
        return super().submit(fn, *args, **kwargs)
