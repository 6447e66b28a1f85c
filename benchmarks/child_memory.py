"""Peak resident memory of this process's children, sampled in a thread: a Spark driver's JVM and
its Python workers, which the driver's own peak RSS does not include."""

from __future__ import annotations

import threading

import psutil


class ChildMemory:
    """``start()``, run the job, then ``stop()`` returns the peaks in MiB (JVM, Python workers)."""

    def __init__(self, interval_seconds: float = 0.5) -> None:
        self.peaks = {"jvm_peak_rss_mb": 0.0, "workers_peak_rss_mb": 0.0}
        self._interval = interval_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> ChildMemory:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join(timeout=5)
        return dict(self.peaks)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.is_set():
            now = dict.fromkeys(self.peaks, 0.0)
            for child in me.children(recursive=True):
                try:
                    key = "jvm_peak_rss_mb" if "java" in child.name() else "workers_peak_rss_mb"
                    now[key] += child.memory_info().rss / 2**20
                except psutil.Error:  # a worker that exited between listing and reading
                    pass
            for key, value in now.items():
                self.peaks[key] = max(self.peaks[key], value)
            self._done.wait(self._interval)
