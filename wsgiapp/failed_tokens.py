"""The limit on wrong bearer tokens: one count per client address, shared by every process
and host through the database when it can be (docs/security.rst)."""
import threading
import time

from wsgiapp.http import TooManyRequests


class FailedTokens:
    """Wrong bearer tokens per client address: after `limit` in a window of `window` seconds,
    the address gets 429 until the window ends. Only failures count, so a writer with the
    right token is never slowed (nginx cannot tell a wrong token from a right one before the
    app answers).

    With `shared(address, window number)` (the app's: a row per address and minute in the
    database, docs/security.rst), the count is one for every process and host: each failure
    adds one there and learns the total, and the 11th wrong token from an address is a 429
    wherever it lands. A process that has seen the total reach the limit refuses that
    address at once, before comparing any token; one that has not is told by the next
    failure it counts. When `shared` fails (returns None: the database is away), and for a
    request with no address (nginx always gives one), the count of this process alone
    stands in. At most `size` addresses are remembered per process, the oldest forgotten
    first."""

    def __init__(self, limit=10, window=60, size=10000, shared=None):
        self.limit, self.window, self.size, self.shared = limit, window, size, shared
        self.windows = {}  # address -> [start of its window (time.monotonic()), failures in it]
        self.lock = threading.Lock()

    def check(self, address):
        with self.lock:
            start, count = self.windows.get(address, (0, 0))
        left = start + self.window - time.monotonic()
        if count >= self.limit and left > 0:
            raise self.refusal(left)

    def refusal(self, left):
        return TooManyRequests('too many wrong bearer tokens from this address; try again later', int(left) + 1)

    def add(self, address):
        """Count one failure; a TooManyRequests when it is over the shared limit."""
        now = time.monotonic()
        if self.shared is not None and address:  # no address (not behind nginx): this process alone
            wall = time.time()
            number = int(wall // self.window)
            count = self.shared(address, number)
            if count is not None:
                left = (number + 1) * self.window - wall
                self._remember(address, [now + left - self.window, count])
                if count > self.limit:
                    raise self.refusal(left)
                return
        with self.lock:
            entry = self.windows.get(address)
            if entry is None or entry[0] + self.window <= now:
                entry = [now, 0]
            self._store(address, [entry[0], entry[1] + 1])

    def _remember(self, address, entry):
        with self.lock:
            self._store(address, entry)

    def _store(self, address, entry):
        self.windows.pop(address, None)
        self.windows[address] = entry  # re-inserted: the dict's order is the age of last failure
        if len(self.windows) > self.size:
            del self.windows[next(iter(self.windows))]
