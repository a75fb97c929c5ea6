"""The edge under load: how fresh nginx's cached reads are, stale copies through a MariaDB
restart, and overload answered with 503 (never 502). Real nginx, uwsgi and MariaDB."""
import json
import shutil
import statistics
import threading
import time
import uuid

import pytest

from tests.helpers.load import Load, report
from tests.helpers.web import call
from tests.helpers.wrk import overload

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def test_freshness_of_cached_reads_is_the_lifetime_plus_one_second(stack):
    """A writer PATCHes an item; anonymous readers poll it and the listing through nginx."""
    token = {'Authorization': f'Bearer {stack.token()}', 'Content-Type': 'application/json'}
    name = f'fresh-{uuid.uuid4().hex[:6]}'
    status, headers, _ = call(stack, 'POST', '/api/admins', json.dumps({'name': name, 'email': 'v0@x.test'}), token)
    item = headers['Location']
    listing = '/api/admins?limit=100&after=' + str(int(item.rsplit('/', 1)[1]) - 1)
    seen = {}  # (reader, version) -> first monotonic time it saw that version
    stop = threading.Event()

    def reader(number, path, pick):
        while not stop.is_set():
            status, _, body = call(stack, 'GET', path)
            if status == 200:
                email = pick(json.loads(body))
                seen.setdefault((number, int(email[1:].split('@')[0])), time.monotonic())
            time.sleep(0.01)
    readers = [threading.Thread(target=reader, args=(n, path, pick)) for n, (path, pick) in enumerate(
        [(item, lambda d: d['email'])] * 2 + [(listing, lambda d: d['items'][0]['email'])] * 2)]
    for thread in readers:
        thread.start()
    acknowledged, own_reads = {}, []
    try:
        for version in range(1, 11):
            status, _, _ = call(stack, 'PATCH', item, json.dumps({'email': f'v{version}@x.test'}), token)
            assert status == 200
            acknowledged[version] = time.monotonic()
            _, _, body = call(stack, 'GET', item, headers=token)  # the writer, with its credentials
            own_reads.append(json.loads(body)['email'] == f'v{version}@x.test')
            time.sleep(0.7)
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    # A reader that saw a later version first also saw this one by then.
    delays = [max(0.0, min(t for (r, v), t in seen.items() if r == reader and v >= version) - at)
              for version, at in acknowledged.items() for reader in range(len(readers))]
    report('10. freshness: 10 PATCHes, 4 anonymous readers', ['PATCH 200'] * 10,
           max_s=round(max(delays), 2), median_s=round(statistics.median(delays), 2),
           p90_s=round(sorted(delays)[int(len(delays) * 0.9)], 2), writer_saw=f'{sum(own_reads)}/10')
    assert all(own_reads)                   # the writer reads its writes at once
    assert max(delays) <= 2.0 + 0.25        # WSGIAPP_CACHE_SECONDS + 1, and a poll's slack


def test_cached_reads_survive_a_mariadb_restart(stack):
    paths = ['/', '/admins', '/api/admins', '/api/admins?limit=2', '/openapi.json']
    for path in paths:
        assert call(stack, 'GET', path)[0] == 200
    with Load(stack, lambda n: ('GET', paths[hash(n) % len(paths)], None, {}), threads=4, seconds=30) as load:
        time.sleep(1)
        stack.mariadb.stop()
        down = time.monotonic()
        time.sleep(3)
        stack.mariadb.start()
        time.sleep(1.5)
    statuses = load.statuses()
    stale = sum(1 for a in load.answers if a[0] >= down and a[3].get('X-Cache-Status') == 'STALE')
    report('11. MariaDB restarted under anonymous reads of cached pages', statuses, stale=stale)
    assert set(statuses) == {200}
    assert stale > 0


@pytest.mark.parametrize('connections, rounds, least', [
    # make test: a smoke-level floor for a noisy shared machine, on the median of three
    # rounds (a single round once read 0.79: one burst of a neighbour)
    (256, 3, 0.8),
    pytest.param(256, 3, 0.9, marks=pytest.mark.slow),
    pytest.param(1000, 3, 0.9, marks=pytest.mark.slow)])
def test_overload_is_refused_with_503_never_502(stack, connections, rounds, least):
    """Uncached reads (with the token, past the cache) far past capacity: no 502, no socket
    error, goodput at least 0.9 of what 32 connections get, a bounded p99."""
    if not shutil.which('wrk'):
        pytest.fail('wrk is not installed: make test installs it (Debian package wrk)')
    private = [f'Authorization: Bearer {stack.token()}']
    seconds = 8 if connections >= 1000 else 5  # 1,000 TLS handshakes need time to amortise
    found = overload(stack, connections, rounds, seconds, '/api/admins?limit=10', private)
    report(f'12. overload: {connections} connections against 32, {rounds} round(s)',
           ['wrk'] * found.pop('runs'), **found)
    assert found['502'] == 0 and found['socket_errors'] == 0 and found['other'] == 0
    assert found['ratio_per_stack_cpu'] >= least
    # Bounded: at most 1000 requests are admitted (limit_conn) and queue in uwsgi, served at
    # about 3,000/s here: a third of a second. 2 s leaves room for a slower machine.
    assert found['p99_ms'] < 2000
