"""The edge under load: how fresh nginx's cached reads are, stale copies through a MariaDB
restart, and overload answered with 503 (never 502). Real nginx, uwsgi and MariaDB."""
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import threading
import time
import uuid

import pytest

from launcher.process import ROOT
from tests.helpers.load import Load, report
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
STATUS_LUA = ROOT / 'bench' / 'status.lua'  # shared with make bench


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


def wrk(stack, connections, seconds, path, headers=()):
    command = ['wrk', '-t2', f'-c{connections}', f'-d{seconds}s', '--timeout', '10s', '-s', str(STATUS_LUA)]
    for header in headers:
        command += ['-H', header]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([*command, f'{stack.url}{path}'], capture_output=True, text=True, timeout=seconds + 60)
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    found = re.search(r'2xx=(\d+) 502=(\d+) 503=(\d+) other=(\d+) p99=([\d.]+)ms errors=(\d+)/(\d+)/(\d+)/(\d+)',
                      done.stdout)
    assert found, done.stdout + done.stderr
    ok, bad_gateway, unavailable, other, p99, *errors = found.groups()
    # wrk shares this machine's cores with the stack, and 1,000 connections cost it twice the
    # CPU of 32: goodput per CPU-second left to the stack is what the stack itself achieves.
    left = (os.cpu_count() or 1) * seconds - client_cpu
    return {'2xx/s': round(int(ok) / seconds), '2xx/stack-cpu-s': int(ok) / left,
            'client_cpu_s': round(client_cpu, 1), '502': int(bad_gateway), '503': int(unavailable),
            'other': int(other), 'p99_ms': float(p99), 'socket_errors': sum(map(int, errors))}


@pytest.mark.parametrize('connections, rounds, least', [
    (256, 1, 0.8),  # make test: one round, a smoke-level floor for a noisy shared machine
    pytest.param(256, 3, 0.9, marks=pytest.mark.slow),
    pytest.param(1000, 3, 0.9, marks=pytest.mark.slow)])
def test_overload_is_refused_with_503_never_502(stack, connections, rounds, least):
    """Uncached reads (with the token, past the cache) far past capacity: no 502, no socket
    error, goodput at least 0.9 of what 32 connections get, a bounded p99."""
    if not shutil.which('wrk'):
        pytest.fail('wrk is not installed: make test installs it (Debian package wrk)')
    private = [f'Authorization: Bearer {stack.token()}']
    seconds = 8 if connections >= 1000 else 5  # 1,000 TLS handshakes need time to amortise
    # Capacity at 32 connections, interleaved with the overload runs (medians): this machine
    # drifts by 10% or more from one run to the next.
    capacity = [wrk(stack, 32, seconds, '/api/admins?limit=10', private)]
    overloaded = []
    for _ in range(rounds):
        overloaded.append(wrk(stack, connections, seconds, '/api/admins?limit=10', private))
        capacity.append(wrk(stack, 32, seconds, '/api/admins?limit=10', private))
    base = statistics.median(run['2xx/s'] for run in capacity)
    goodput = statistics.median(run['2xx/s'] for run in overloaded)
    ratio = (statistics.median(run['2xx/stack-cpu-s'] for run in overloaded)
             / statistics.median(run['2xx/stack-cpu-s'] for run in capacity))
    worst = {key: max(run[key] for run in overloaded)
             for key in ('502', '503', 'other', 'p99_ms', 'socket_errors', 'client_cpu_s')}
    report(f'12. overload: {connections} connections against 32, {rounds} round(s)',
           ['wrk'] * (len(capacity) + rounds), goodput_32=round(base), goodput=round(goodput),
           raw_ratio=round(goodput / base, 2), ratio_per_stack_cpu=round(ratio, 2), **worst)
    assert worst['502'] == 0 and worst['socket_errors'] == 0 and worst['other'] == 0
    assert ratio >= least
    # Bounded: at most 1000 requests are admitted (limit_conn) and queue in uwsgi, served at
    # about 3,000/s here: a third of a second. 2 s leaves room for a slower machine.
    assert worst['p99_ms'] < 2000
