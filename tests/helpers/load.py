"""The fault suite's means: a steady, bounded load, one report row per scenario (gathered
into tests/faults/results/latest.md by `make faults`), where the edge sent each request, and
writers that must not lose or double a write."""
import http.client
import json
import os
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

from launcher.logs import read as read_log
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
    """request id -> (app host address, version, database read source: '' for none) from the
    edge's access log, which nginx writes just after the answer: waits a moment for the last
    lines (seconds=0: one look)."""
    wanted, found = set(request_ids) - {None}, {}

    def all_logged():
        for line in read_log(cluster.edge.access_log):
            if line['request_id'] in wanted:
                found[line['request_id']] = (line['upstream'].split(', ')[-1].rsplit(':', 1)[0], line['version'],
                                             line['read'])
        return wanted <= set(found)
    first_within(all_logged, seconds, 'the edge to log every request')
    return found


def bearer(cluster):
    """The API token's header: writes need it, and it makes a read private to the edge's
    micro-cache, so that it reaches an app host, as an API client's reads do."""
    return {'Authorization': f'Bearer {cluster.token()}'}


def reads(cluster, paths):
    """request(n) for Load: GETs of `paths` in turn, with the API token, so that each reaches
    an app host (bearer(), not the micro-cache)."""
    headers = bearer(cluster)
    return lambda n: ('GET', paths[hash(n) % len(paths)], None, headers)


class Writer(threading.Thread):
    """Creates items with an Idempotency-Key each, retrying one until it is answered, as a
    client that must not lose or double a write does. With lose=True every fifth write's
    first answer is lost on purpose: the request is sent, the row appears on the primary,
    the connection is dropped unread."""

    def __init__(self, cluster, label, seconds, retry=True, lose=False):
        super().__init__()
        self.cluster, self.label, self.seconds, self.retry, self.lose = cluster, label, seconds, retry, lose
        self.acked, self.statuses, self.retries, self.replayed, self.lost = {}, [], 0, 0, 0
        self.stop = threading.Event()

    def run(self):
        headers = {**bearer(self.cluster), 'Content-Type': 'application/json'}
        deadline, n = time.monotonic() + self.seconds, 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            name = f'{self.label}-{n}'
            body = json.dumps({'name': name, 'email': f'{name}@x.test'})
            key = {'Idempotency-Key': uuid.uuid4().hex}
            if n % 5 == 0 and self.lose:
                self.lose_answer(body, {**headers, **key}, name)
            for _ in range(50 if self.retry else 1):
                status, answer_headers, answer = call(self.cluster, 'POST', '/api/admins', body, {**headers, **key})
                self.statuses.append(status)
                if status == 201:
                    self.acked[name] = json.loads(answer)['id']
                    self.replayed += answer_headers.get('Idempotent-Replayed') == 'true'
                    break
                if status not in ('error', 409, 502, 503, 504):
                    break  # a refusal a retry cannot change: counted, and the test fails on it
                self.retries += 1
                time.sleep(0.1)

    def lose_answer(self, body, headers, name):
        where = urlsplit(self.cluster.url)
        connection = http.client.HTTPSConnection(where.hostname, where.port, timeout=10,
                                                 context=self.cluster.ssl_context())
        connection.request('POST', '/api/admins', body=body, headers=headers)
        committed = first_within(lambda: self.cluster.db.sql(('SELECT 1 FROM vc_admin WHERE name = %s', (name,)),
                                                             database='wsgiapp'), 5, f'{name} to be committed')
        connection.close()  # the answer is never read: lost on the way, after the commit
        # Only an answer lost after its commit must come back as a replay; a request that
        # died with the host it reached (never committed) is created by the retry, once.
        self.lost += bool(committed)


def written(cluster, writers, prefix):
    """(what the writers were acknowledged, {name: id}; the rows the primary has, {name: id};
    how many names it has more than once)."""
    rows = cluster.db.sql(("SELECT name, id FROM vc_admin WHERE name LIKE %s", (prefix + '-%',)), database='wsgiapp')
    acked = {name: id_ for writer in writers for name, id_ in writer.acked.items()}
    names = [name for name, _ in rows]
    return acked, dict(rows), len(names) - len(set(names))
