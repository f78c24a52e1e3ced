"""Peak memory of everything running on the machine, sampled in a background thread."""

from __future__ import annotations

import threading
import time

import psutil


class PeakMemory:
    """Peak of (total − available) memory above the level at start: counts every process,
    Ray workers and the object store's shared memory included."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _used() -> int:
        vm = psutil.virtual_memory()
        return vm.total - vm.available

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used() - self.base)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.base = self._used()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gb(self) -> float:
        return self.peak / 1e9
