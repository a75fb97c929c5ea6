"""The app's metrics on a running stack (uwsgi's workers, its mule, nginx in front): counts
exact across workers and across a worker's SIGKILL, a scrape that answers while every worker
is busy, and nothing of it on the public site."""
import os
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from launcher.wait import wait_for
from tests.helpers.servers import admin_session
from tests.helpers.web import api, request
from wsgiapp.exporter import uwsgi_stats

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]

HEALTHZ = 'wsgiapp_requests_total{route="/healthz",method="GET",status="200"}'
CREATED = 'wsgiapp_requests_total{route="/api/admins",method="POST",status="201"}'


def scrape(stack):
    """{sample: value} from the stack's metrics listener, and how long the scrape took."""
    started = time.perf_counter()
    with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:
        assert response.headers['Content-Type'].startswith('text/plain; version=0.0.4')
        text = response.read().decode()
    took = time.perf_counter() - started
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith('#'):
            key, _, value = line.rpartition(' ')
            samples[key] = float(value)
    return samples, took


def healthz_many(stack, count):
    """`count` GET /healthz from 8 clients at once, so both workers serve some: all 200."""
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: request(stack, 'GET', '/healthz')[0], range(count)))
    assert statuses == [200] * count


def test_counts_are_exact_across_workers_and_a_worker_sigkill(stack):
    before, _ = scrape(stack)
    healthz_many(stack, 150)
    for n in range(5):
        assert api(stack, 'POST', '/api/admins', {'name': f'metrics-{os.getpid()}-{n}',
                                                  'email': 'm@example.com'})[0] == 201
    stats = uwsgi_stats(str(stack.uwsgi.stats))
    assert all(worker['requests'] > 0 for worker in stats['workers'])  # both workers counted some
    victim = stats['workers'][0]
    os.kill(victim['pid'], signal.SIGKILL)

    def respawned():
        worker = uwsgi_stats(str(stack.uwsgi.stats))['workers'][0]
        return worker['pid'] not in (0, victim['pid']) and worker['status'] == 'idle'
    wait_for(respawned, 10, 'uwsgi to respawn the killed worker')
    healthz_many(stack, 150)
    after, _ = scrape(stack)
    assert after[HEALTHZ] - before.get(HEALTHZ, 0) == 300
    assert after[CREATED] - before.get(CREATED, 0) == 5
    assert after['uwsgi_worker_respawns_total'] - before['uwsgi_worker_respawns_total'] == 1
    assert after['wsgiapp_requests_in_flight'] == 0  # the scrape itself is not a request of the app
    assert after['uwsgi_up'] == 1
    # Files per worker id and thread, not per process: the respawned worker's threads carried
    # on in their predecessors' (2 workers of 4 threads: at most 8 pairs, whatever respawns).
    files = set(os.listdir(stack.run_dir / 'metrics'))
    assert files <= {f'worker-{worker}-{thread}.{kind}'
                     for worker in (1, 2) for thread in range(4) for kind in ('keys', 'values')}, files
    assert {'worker-1-0.keys', 'worker-2-0.keys'} <= files


def test_a_scrape_answers_while_every_worker_is_busy(stack):
    """Every worker thread waits on a table lock; the mule still answers within 100 ms."""
    session = admin_session(stack.mariadb.admin_kwargs())
    statuses = []
    auth = {'Authorization': f'Bearer {stack.token()}'}  # private: past nginx's cache, to the app
    try:
        session('LOCK TABLES wsgiapp.vc_admin WRITE')
        clients = [threading.Thread(target=lambda: statuses.append(
            request(stack, 'GET', '/api/admins', headers=auth)[0])) for _ in range(8)]
        for client in clients:
            client.start()
        wait_for(lambda: scrape(stack)[0].get('uwsgi_workers{state="busy"}') == 2, 10, 'both workers busy')
        samples, took = min((scrape(stack) for _ in range(5)), key=lambda result: result[1])
        assert samples['uwsgi_workers{state="busy"}'] == 2
        assert samples['wsgiapp_requests_in_flight'] == 8
        assert took < 0.1, took
    finally:
        session('UNLOCK TABLES')
        session.close()
    for client in clients:
        client.join(30)
    assert statuses == [200] * 8
    samples, _ = scrape(stack)
    assert samples['wsgiapp_requests_in_flight'] == 0
    assert samples['wsgiapp_pool_connections_in_use{server="primary"}'] == 0


def test_metrics_are_not_on_the_public_site(stack):
    status, _, body = request(stack, 'GET', '/metrics')
    assert status == 404 and b'wsgiapp_requests_total' not in body
    status, _, body = request(stack, 'GET', '/metrics', tls=False)
    assert b'wsgiapp_requests_total' not in body
    assert stack.metrics_url.startswith('http://127.0.0.1:')
