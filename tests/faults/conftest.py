"""The fault suite: each scenario runs against the real stack (private MariaDB, uwsgi on a
unix socket, nginx) under a steady, bounded load from loopback, and reports its counts.
`make faults` runs all of it; `make test` runs the scenarios not marked slow."""
import http.client
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

REPORT = []  # one row per scenario, printed as a table at the end


def report(scenario, statuses, **counts):
    by_status = Counter(statuses)
    row = {'scenario': scenario, 'sent': len(statuses),
           'answers': ' '.join(f'{code}:{n}' for code, n in sorted(by_status.items(), key=lambda kv: str(kv[0]))),
           **counts}
    REPORT.append(row)
    print(f'\n[{scenario}] ' + ', '.join(f'{k}={v}' for k, v in row.items() if k != 'scenario'))


def pytest_terminal_summary(terminalreporter):
    if not REPORT:
        return
    write = terminalreporter.write_line
    write('')
    write('| scenario | requests | answers by status | writes acknowledged | writes found | also seen |')
    write('|---|---:|---|---:|---:|---|')
    for row in REPORT:
        seen = ', '.join(f'{k}={v}' for k, v in row.items()
                         if k not in ('scenario', 'sent', 'answers', 'acked', 'found'))
        write(f"| {row['scenario']} | {row['sent']} | {row['answers']} | {row.get('acked', '')} "
              f"| {row.get('found', '')} | {seen} |")


def call(stack, method, path, body=None, headers=None, timeout=30):
    """(status, headers, body) over HTTPS, or ('error', ...) when the connection itself failed."""
    where = urlsplit(stack.url)  # a one-host stack on loopback, or a cluster's edge
    connection = http.client.HTTPSConnection(where.hostname, where.port, timeout=timeout,
                                             context=stack.ssl_context())
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except (OSError, http.client.HTTPException) as error:
        return 'error', {}, str(error).encode()
    finally:
        connection.close()


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
        deadline, n = time.monotonic() + self.seconds, 0
        while not self._stop.is_set() and time.monotonic() < deadline:
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
    access log, which nginx writes just after the answer: waits a moment for the last lines."""
    wanted, found = set(request_ids) - {None}, {}
    deadline = time.monotonic() + seconds
    while True:
        for line in cluster.edge.access_log.read_text().splitlines():
            fields = dict(field.split('=', 1) for field in line.split() if '=' in field)
            if fields.get('id') in wanted:
                found[fields['id']] = (fields['upstream'].split(', ')[-1].rsplit(':', 1)[0], fields['version'],
                                       fields.get('read'))
        if wanted <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
