"""Forged consistency tokens through the cluster (docs/replicas.rst, "Why signed"): a client
sending reads with tokens the app never issued, at 100 requests/s, must not slow the
honest readers. Such a token is answered by the primary at once, with no replica wait, so it
holds no uwsgi thread and none of the half a process lets wait for a replica.

  l. honest readers (wrk, each read carrying a REAL token from a write through the edge, so
     it waits on the replica and is private to the edge's cache) measured alone, then with
     one client sending forged tokens (`0-1-999999999`: a position the primary never reached;
     `7-1-5`: a domain the replica never saw; a well-formed token with a wrong MAC) at a
     steady 100 requests/s on one kept-alive TLS connection to the edge, then alone again.

Honest req/s must stay at least 0.9 of what they were alone and their p99 at most twice,
and the forged reads are answered 200, quickly (median under 100 ms): before tokens were
signed, each forged read waited WSGIAPP_REPLICA_WAIT (0.5 s) on the replica holding a thread."""
import http.client
import itertools
import json
import os
import shutil
import statistics
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from launcher import replication
from tests.helpers.alerts import alerts_after, named, quiet
from tests.helpers.load import report, served_by
from tests.helpers.web import call
from tests.helpers.wrk import wrk

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
HONEST_CONNECTIONS = 16
FORGED = ['0-1-999999999', '7-1-5', '0-1-5~AAAAAAAAAAAAAAAAAAAAAA']
RATE = 100  # forged reads a second, from one client


def real_token(cluster):
    """(path of an item, the consistency token of its write): a POST through the edge."""
    name = f'forged-{uuid.uuid4().hex[:6]}'
    status, answer, body = call(cluster, 'POST', '/api/admins',
                                json.dumps({'name': name, 'email': f'{name}@x.test'}),
                                {'Authorization': f'Bearer {cluster.token()}', 'Content-Type': 'application/json',
                                 'Idempotency-Key': uuid.uuid4().hex})
    assert status == 201, body
    token = answer['X-Consistency-Token']
    assert '~' in token, token
    return urlsplit(answer['Location']).path, token


class Forger(threading.Thread):
    """One client: `count` reads with forged tokens, paced at `rate` a second on one
    kept-alive HTTPS connection to the edge (a new one only after a failure); bounded in
    count and in time (`count / rate` seconds, plus 10)."""

    def __init__(self, cluster, path, count, rate):
        super().__init__()
        self.cluster, self.path, self.count, self.rate = cluster, path, count, rate
        self.answers = []  # (status, seconds)
        self.seconds = None
        self.cpu_s = None  # this thread's own CPU (its TLS included): the client's, not the stack's

    def connect(self):
        where = urlsplit(self.cluster.url)
        return http.client.HTTPSConnection(where.hostname, where.port, timeout=10,
                                           context=self.cluster.ssl_context())

    def run(self):
        connection, tokens = self.connect(), itertools.cycle(FORGED)
        began, cpu = time.monotonic(), time.thread_time()
        deadline = began + self.count / self.rate + 10
        try:
            for n in range(self.count):
                pause = began + n / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() > deadline:
                    break
                started = time.monotonic()
                try:
                    connection.request('GET', self.path, headers={'X-Consistency-Token': next(tokens)})
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                    if response.will_close:
                        connection.close()
                        connection = self.connect()
                except (OSError, http.client.HTTPException):
                    status = 'error'
                    connection.close()
                    connection = self.connect()
                self.answers.append((status, time.monotonic() - started))
        finally:
            connection.close()
            self.seconds = time.monotonic() - began
            self.cpu_s = time.thread_time() - cpu


def forged_tokens(cluster, monitor, seconds, rounds):
    """The scenario: honest readers alone for `seconds`, then `rounds` times beside a forger for as
    long and alone again. No alert fires: a forged consistency token is a read the primary
    answers, not a refused credential (WrongTokensSurge counts bearer tokens)."""
    if not shutil.which('wrk'):
        pytest.fail('wrk is not installed: make test installs it (Debian package wrk)')
    since = quiet(monitor)
    path, token = real_token(cluster)
    honest = [f'X-Consistency-Token: {token}']
    # Where each kind is answered: the real token by the replica once it has the write, a
    # forged one by the primary; neither from the edge's cache.
    replication.caught_up(cluster.db, cluster.replicas[0], seconds=20)
    answers = [call(cluster, 'GET', path, headers={'X-Consistency-Token': given}) for given in [token, *FORGED]]
    assert [a[0] for a in answers] == [200] * 4 and all(a[1].get('X-Cache-Status') != 'HIT' for a in answers)
    by = served_by(cluster, [a[1].get('X-Request-ID') for a in answers])
    assert [by.get(a[1].get('X-Request-ID'), ('', '', None))[2] for a in answers] == ['replica1'] + ['primary'] * 3
    wrk(cluster, HONEST_CONNECTIONS, 1, path, honest)
    # Alone, beside the forger, alone again (`rounds` times beside): this shared machine
    # drifts 10 to 20% from one run to the next with other work on it, so each forged run is
    # held against the runs alone on either side of it, and the ratios' median is taken over
    # the rounds (tests.helpers.wrk.overload interleaves for the same reason).
    alone, beside, forgers = [wrk(cluster, HONEST_CONNECTIONS, seconds, path, honest)], [], []
    for _ in range(rounds):
        forger = Forger(cluster, path, RATE * seconds, RATE)
        forger.start()
        try:
            beside.append(wrk(cluster, HONEST_CONNECTIONS, seconds, path, honest))
        finally:
            forger.join(timeout=seconds + 30)
        assert not forger.is_alive()
        forgers.append(forger)
        alone.append(wrk(cluster, HONEST_CONNECTIONS, seconds, path, honest))

    def ratio(key):
        """The median over the rounds of each forged run against the mean of the runs alone
        just before and just after it."""
        each = [run[key] / ((alone[n][key] + alone[n + 1][key]) / 2) for n, run in enumerate(beside)]
        return round(statistics.median(each), 2)

    # Also per CPU-second left to the stack (as tests.helpers.wrk.wrk counts it for wrk),
    # the forger's own CPU (its thread's, TLS included) taken off too: reported, to tell
    # the client's cost from the stack's.
    cores = os.cpu_count() or 1
    for run, forger in zip(beside, forgers):
        run['2xx/stack-cpu-s'] = run['2xx/s'] * seconds / (cores * seconds - run['client_cpu_s'] - forger.cpu_s)
    statuses = [status for forger in forgers for status, _ in forger.answers]
    times = sorted(elapsed for forger in forgers for _, elapsed in forger.answers)
    found = {'honest_2xx/s_alone': ','.join(str(run['2xx/s']) for run in alone),
             'honest_2xx/s_with': ','.join(str(run['2xx/s']) for run in beside),
             'req_ratio': ratio('2xx/s'), 'req_ratio_per_stack_cpu': ratio('2xx/stack-cpu-s'),
             'forger_cpu_s': ','.join(str(round(f.cpu_s, 1)) for f in forgers),
             'honest_p99_ms_alone': ','.join(str(run['p99_ms']) for run in alone),
             'honest_p99_ms_with': ','.join(str(run['p99_ms']) for run in beside),
             'p99_ratio': ratio('p99_ms'),
             'forged_rate/s': round(min(len(f.answers) / f.seconds for f in forgers)),
             'forged_median_ms': round(statistics.median(times) * 1000, 1) if times else None,
             'forged_p99_ms': round(times[int(len(times) * 0.99)] * 1000, 1) if times else None,
             'honest_non_2xx': sum(run[key] for run in alone + beside for key in ('502', '503', 'other')),
             'honest_socket_errors': sum(run['socket_errors'] for run in alone + beside),
             'alerts': named(alerts_after(monitor, since))}
    report(f'l. forged tokens: {HONEST_CONNECTIONS} honest readers with a real token, {seconds} s alone, then '
           f'{rounds} x ({seconds} s beside {RATE} forged reads/s from one client, {seconds} s alone)',
           statuses, **found)
    assert found['honest_non_2xx'] == 0 and found['honest_socket_errors'] == 0
    assert set(statuses) == {200}, f'every forged read is answered 200: {found}'
    assert len(statuses) == RATE * seconds * rounds
    return found


@pytest.mark.slow
def test_l_forged_tokens_do_not_slow_honest_readers(cluster, cluster_monitor):
    found = forged_tokens(cluster, cluster_monitor, 10, rounds=5)
    assert found['req_ratio'] >= 0.9, found
    assert found['p99_ratio'] <= 2, found
    assert found['forged_median_ms'] < 100, found


def test_l_forged_tokens_do_not_slow_honest_readers_briefly(cluster, cluster_monitor):
    # make test's variant: three rounds of 3 s each, with looser bounds. On this shared 2-core
    # machine wrk, this client, the edge, three app hosts and both databases share the two
    # cores, and other runs take them too: one run moves 10 to 25% against the next, and a
    # 3 s run's p99 is its slowest 70 or so reads, which any burst of a neighbour makes (one
    # round of 4 s, on a quiet machine, once gave 63.8 ms beside the forger against 16 ms
    # alone: 3.9 x). The median of three rounds damps one such burst. And the 100 forged
    # reads/s are some 5% more requests for the stack, which a saturated machine takes from
    # the honest readers. What this variant must catch is still caught: a forged token that
    # waited on the replica again would hold a thread 0.5 s per read (50 thread-seconds a
    # second against the cluster's 24 threads), the forged median far over 150 ms and the
    # honest readers starved, not 0.6 of before.
    # The 10 s variant (make faults: five rounds, medians) holds the bounds.
    found = forged_tokens(cluster, cluster_monitor, 3, rounds=3)
    assert found['req_ratio'] >= 0.6, found
    assert found['p99_ratio'] <= 3, found
    assert found['forged_median_ms'] < 150, found
