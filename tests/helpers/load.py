"""The fault suite's means: a steady, bounded load, one report row per scenario (gathered
into tests/faults/results/latest.md by `make faults`), and where the edge sent each request."""
import os
import threading
import time
from collections import Counter

from launcher.wait import TimedOut, wait_for
from tests.helpers.web import call

REPORT = []  # one row per scenario: tests/faults/conftest.py prints them, and writes them after `make faults`


def report(scenario, statuses, **counts):
    """Record (and print) one scenario's row: what it sent, the answers by status, and its
    own counts (acked and found: writes acknowledged and found afterwards)."""
    by_status = Counter(statuses)
    row = {'scenario': scenario, 'sent': len(statuses),
           'answers': ' '.join(f'{code}:{n}' for code, n in sorted(by_status.items(), key=lambda kv: str(kv[0]))),
           **counts}
    test = os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]  # 'path::name (call)'
    REPORT.append({**row, 'test': test})
    print(f'\n[{scenario}] ' + ', '.join(f'{k}={v}' for k, v in row.items() if k != 'scenario'))


def first_within(condition, seconds, what, interval=0.05):
    """What `condition()` first returns that is true, within `seconds`; None if nothing did
    (for a scenario that reports how long something took, and asserts it afterwards)."""
    try:
        return wait_for(condition, seconds, what, interval=interval)
    except TimedOut:
        return None


class Load:
    """Threads sending requests on loopback until stopped, for at most `seconds`.
    `request(n)` -> (method, path, body, headers); every answer is recorded with its time."""

    def __init__(self, stack, request, threads=4, seconds=60):
        self.stack, self.request, self.seconds = stack, request, seconds
        self.answers = []  # (monotonic time, status, elapsed, headers, body, sent body)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        self._lock = threading.Lock()

    def _run(self, thread_number):
        until, n = time.monotonic() + self.seconds, 0
        while not self._stop.is_set() and time.monotonic() < until:
            n += 1
            method, path, body, headers = self.request(f'{thread_number}-{n}')
            started = time.monotonic()
            status, answer_headers, answer = call(self.stack, method, path, body, headers)
            with self._lock:
                self.answers.append((started, status, time.monotonic() - started, answer_headers, answer, body))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def statuses(self, since=0.0, until=float('inf')):
        return [a[1] for a in self.answers if since <= a[0] < until]


def served_by(cluster, request_ids, seconds=2):
    """request id -> (app host address, version, database read source) from the edge's
    access log, which nginx writes just after the answer: waits a moment for the last lines
    (seconds=0: one look)."""
    wanted, found = set(request_ids) - {None}, {}

    def all_logged():
        for line in cluster.edge.access_log.read_text().splitlines():
            fields = dict(field.split('=', 1) for field in line.split() if '=' in field)
            if fields.get('id') in wanted:
                found[fields['id']] = (fields['upstream'].split(', ')[-1].rsplit(':', 1)[0], fields['version'],
                                       fields.get('read'))
        return wanted <= set(found)
    first_within(all_logged, seconds, 'the edge to log every request')
    return found
