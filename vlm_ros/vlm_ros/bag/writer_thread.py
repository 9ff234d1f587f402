"""A rosbags Writer that one thread of its own opens, writes and closes.

A recorder's messages arrive on the executor's threads, and it is closed from the main thread;
SQLite refuses a connection that another thread than its maker's uses (``--storage sqlite3``
failed at the first answer). Messages wait in a queue for the writer's thread, so a callback
never waits for the disk either; up to MAX_QUEUED_BYTES of them: a disk that cannot keep up (an
SD card, a flood of answers) must not take the machine's memory. What would pass that is
dropped, counted, and fails the close: the recording is not a whole one.
"""

import queue
import threading
from concurrent.futures import Future

from .storage import BagError, add_topic, bag_writer

MAX_QUEUED_BYTES = 256 * 2**20  # of messages waiting for the disk


class WriterThread:
    """A new rosbag2 directory at path, with one connection per topic of ``types``."""

    def __init__(self, path, storage: str, types: dict, max_queued: int = MAX_QUEUED_BYTES):
        """Open the bag on its thread; raise BagError saying why it cannot be written."""
        self._path = path
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued, self._max_queued, self.dropped = 0, max_queued, 0  # bytes, bytes, messages
        self._error = None
        opened = Future()
        self._thread = threading.Thread(target=self._run, args=(storage, types, opened),
                                        name='bag-writer', daemon=True)
        self._thread.start()
        self.connections = opened.result()  # {topic: connection}

    def _run(self, storage: str, types: dict, opened: Future) -> None:
        try:
            with bag_writer(self._path, storage) as writer:
                opened.set_result({topic: add_topic(writer, topic, msgtype)
                                   for topic, msgtype in types.items()})
                for connection, log_ns, data in iter(self._queue.get, None):
                    writer.write(connection, log_ns, data)
                    with self._lock:
                        self._queued -= len(data)
        except Exception as exc:  # noqa: BLE001 - handed to whoever opens or closes it
            error = exc if isinstance(exc, BagError) else BagError(
                f'cannot record into {self._path}: {exc}', exc)
            if opened.done():
                self._error = error
                for _ in iter(self._queue.get, None):  # taken, so that close() returns
                    pass
            else:
                opened.set_exception(error)

    def write(self, connection, log_ns: int, data: bytes) -> None:
        """Queue one message for the writer's thread (any thread), or drop it and count it."""
        with self._lock:
            if self._queued + len(data) > self._max_queued:
                self.dropped += 1
                return
            self._queued += len(data)
        self._queue.put((connection, log_ns, data))

    def close(self) -> None:
        """Write what is queued, finish the bag; BagError if a write or the finish failed."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.dropped:
            raise BagError(f'{self._path}: the disk did not keep up: {self.dropped} messages '
                           f'dropped, beyond {self._max_queued} bytes waiting for it')
