"""The embedded broker: kombu's filesystem transport with a short drain timeout.

Celery drives transports without event-loop support, such as this one, with a blocking
loop that calls drain_events(timeout=2.0) and only acknowledges finished tasks and
raises its prefetch window between two calls (celery/worker/loops.py: synloop, Celery
5.5). With acks_late and a prefetch of one task per process, a free pool process then
waits up to 2 s for its next task. Capping each drain at DRAIN_SECONDS makes the loop
come round that often, so the next task starts within about that time.
"""

from __future__ import annotations

from kombu.transport import filesystem

DRAIN_SECONDS = 0.05


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport; a drain with a timeout lasts at most DRAIN_SECONDS."""

    def drain_events(self, connection, timeout=None):
        if timeout is not None and timeout > DRAIN_SECONDS:
            timeout = DRAIN_SECONDS
        return super().drain_events(connection, timeout=timeout)
