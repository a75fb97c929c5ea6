"""The cluster under faults (make cluster's hosts: an edge, three app hosts, a database
host), each scenario under a steady, bounded load sent from this machine to the edge only,
and reporting what it sent and saw:

  a. an app host's uwsgi SIGKILLed, master and workers;
  b. an app host partitioned (its veth down: packets vanish, nothing refuses);
  c. a rolling deploy (make cluster-deploy);
  d. an intruder on the app network talking to every app host's link port (its nginx);
  e. every app host down.

b takes longest, and runs in `make faults` only (marked slow); `make test` runs the others.

Reads that must reach the app (not nginx's micro-cache) carry a bearer token, which makes
a request private to the cache, as an API client's are."""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from launcher.cluster import release
from launcher.process import ROOT
from launcher.tls import Authority
from tests.faults.intruder import ask, client_context, request
from tests.helpers.load import Load, first_within, report, served_by
from tests.helpers.servers import needs_namespaces
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
CONNECT_TIMEOUT = 1.0   # the edge's proxy_connect_timeout (wsgiapp.conf's uwsgi_connect_timeout)
FAIL_TIMEOUT = 5.0      # fail_timeout of each app host (launcher/cluster.py)
READS = ['/api/admins', '/api/admins?limit=2', '/admins', '/']


def bearer(cluster):
    return {'Authorization': f'Bearer {cluster.token()}'}


def reads(cluster):
    """request(n) for Load: reads that reach an app host."""
    headers = bearer(cluster)
    return lambda n: ('GET', READS[hash(n) % len(READS)], None, headers)


def kill(app):
    """SIGKILL uwsgi's master and workers at once (they share the master's process group)."""
    pid = app.uwsgi.pid()
    os.killpg(pid, signal.SIGKILL)
    return pid


def restart(cluster, app):
    app.start(cluster.base / 'releases' / app.version())


class Writer(threading.Thread):
    """Creates items with an Idempotency-Key each, retrying one until it is answered, as a
    client that must not lose or double a write does. Every fifth write's first answer is
    lost on purpose: the request is sent, the row appears, the connection is dropped."""

    def __init__(self, cluster, label, seconds, retry=True):
        super().__init__()
        self.cluster, self.label, self.seconds, self.retry = cluster, label, seconds, retry
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
            if n % 5 == 0 and self.retry:
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
        import http.client
        from urllib.parse import urlsplit
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


def rows_named(cluster, prefix):
    return cluster.db.sql(("SELECT name, id FROM vc_admin WHERE name LIKE %s", (prefix + '-%',)),
                          database='wsgiapp')


def check_writes(cluster, writers, prefix):
    rows = rows_named(cluster, prefix)
    acked = {name: id_ for writer in writers for name, id_ in writer.acked.items()}
    names = [name for name, _ in rows]
    return acked, rows, len(names) - len(set(names))


def test_a_an_app_host_killed(cluster):
    app = cluster.apps[0]
    prefix = f'kill-{uuid.uuid4().hex[:6]}'
    writers = [Writer(cluster, f'{prefix}-w{n}', seconds=12) for n in range(2)]
    with Load(cluster, reads(cluster), threads=4, seconds=30) as load:
        for writer in writers:
            writer.start()
        time.sleep(2)
        killed = kill(app)
        down = time.monotonic()
        time.sleep(4)
        restart(cluster, app)
        back = time.monotonic()
        time.sleep(2)
        for writer in writers:
            writer.stop.set()
            writer.join()
    statuses = load.statuses()
    acked, rows, duplicates = check_writes(cluster, writers, prefix)
    print(f'uwsgi master {killed} SIGKILLed')
    report(f'a. app1 uwsgi SIGKILLed, back {back - down:.1f} s later; 4 readers, 2 writers',
           statuses + [s for w in writers for s in w.statuses], acked=len(acked), found=len(rows),
           duplicates=duplicates, retried=sum(w.retries for w in writers),
           answers_lost=sum(w.lost for w in writers), replayed=sum(w.replayed for w in writers))
    assert statuses and set(statuses) == {200}, 'every read answered'
    assert sum(w.lost for w in writers) >= 2 and sum(w.replayed for w in writers) >= sum(w.lost for w in writers)
    assert duplicates == 0 and dict(rows) == acked, 'every acknowledged write there exactly once'


@pytest.mark.slow
def test_b_an_app_host_partitioned(cluster):
    needs_namespaces(cluster)
    app = cluster.apps[1]
    with Load(cluster, reads(cluster), threads=4, seconds=40) as load:
        time.sleep(1)
        cluster.network.partition(app.name)
        cut = time.monotonic()
        time.sleep(6)
        cluster.network.heal(app.name)
        healed = time.monotonic()
        # Until the host has served again, or fail_timeout and some.

        def served_again():
            recent = [a for a in list(load.answers) if a[0] >= healed]
            by = served_by(cluster, [a[3].get('X-Request-ID') for a in recent], seconds=0)
            return min((a[0] for a in recent if by.get(a[3].get('X-Request-ID'), ('',))[0] == app.address),
                       default=None)
        back = first_within(served_again, FAIL_TIMEOUT + 3, f'{app.name} to serve again', interval=0.5)
    during = sorted(a[2] for a in load.answers if cut <= a[0] < healed)
    p99 = during[int(len(during) * 0.99)]
    report(f'b. app2 partitioned for {healed - cut:.0f} s (veth down); 4 readers', load.statuses(),
           p50_ms=round(statistics.median(during) * 1000), p99_ms=round(p99 * 1000),
           max_ms=round(during[-1] * 1000),
           back_in_rotation_s=None if back is None else round(back - healed, 1))
    assert set(load.statuses()) == {200}
    # A request that first tried the lost host waited out the connect timeout, once.
    assert during[-1] < CONNECT_TIMEOUT + 0.75
    # nginx tries the host again fail_timeout after its last failure, and the last may be a
    # connection begun just before the return, which fails a connect timeout later.
    assert back is not None and back - healed <= FAIL_TIMEOUT + CONNECT_TIMEOUT + 0.5


def test_c_a_rolling_deploy_under_load(cluster, tmp_path):
    # Another version of the code: this checkout with one line more.
    source = tmp_path / 'checkout'
    for part in ('wsgiapp', 'conf'):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns('__pycache__'))
    (source / 'wsgiapp' / 'pages.py').write_text((source / 'wsgiapp' / 'pages.py').read_text() + '# next\n')
    new = release(cluster.base, source).name
    old = {app.version() for app in cluster.apps}
    assert new not in old
    prefix = f'deploy-{uuid.uuid4().hex[:6]}'
    writer = Writer(cluster, prefix, seconds=60, retry=False)
    with Load(cluster, reads(cluster), threads=4, seconds=60) as load:
        writer.start()
        time.sleep(1)
        started = time.monotonic()
        cluster.deploy(source)
        took = time.monotonic() - started
        time.sleep(1)
        writer.stop.set()
        writer.join()
    after = [call(cluster, 'GET', '/healthz')[1]['X-Request-ID'] for _ in range(15)]
    versions = {}
    for host, version, _ in served_by(cluster, after).values():
        versions.setdefault(host, set()).add(version)
    statuses = load.statuses() + writer.statuses
    print(f'releases {sorted(old)} -> {new}')
    report(f'c. make cluster-deploy under load ({took:.1f} s): {len(old)} release(s) -> a new one', statuses,
           acked=len(writer.acked), found=len(rows_named(cluster, prefix)),
           hosts_on_new=sum(v == {new} for v in versions.values()))
    assert set(load.statuses()) == {200} and set(writer.statuses) == {201}
    assert versions == {app.address: {new} for app in cluster.apps}
    assert all(app.version() == new for app in cluster.apps)


def throughput(cluster, seconds=3):
    with Load(cluster, reads(cluster), threads=4, seconds=seconds) as load:
        time.sleep(seconds)
    return sum(1 for status in load.statuses() if status == 200) / seconds


def uwsgi_requests(app):
    """The requests an app host's uwsgi workers have served (its stats server)."""
    import socket
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(app.uwsgi.stats))
        stats = json.loads(b''.join(iter(lambda: client.recv(65536), b'')))
    return sum(worker['requests'] for worker in stats['workers'])


def tcp_listeners_besides_nginx(cluster, app):
    """The TCP sockets listening in an app host's namespace that are not its nginx's:
    uwsgi listens on none (its unix socket only)."""
    from launcher import procs
    done = subprocess.run([*cluster.network.wrap(app.name), 'ss', '-Hltnp'], capture_output=True, text=True,
                          check=True)
    nginx = {app.nginx.pid(), *procs.children(app.nginx.pid())}
    nginx = {getattr(process, 'pid', process) for process in nginx}
    return [line for line in done.stdout.splitlines()
            if not {int(pid) for pid in re.findall(r'pid=(\d+)', line)} <= nginx or 'pid=' not in line]


def test_d_an_intruder_on_the_app_network(cluster, tmp_path):
    needs_namespaces(cluster)
    before = throughput(cluster)
    certs = tmp_path / 'certs'
    certs.mkdir()
    other, other_key = Authority(tmp_path / 'other-ca', 'not the link CA').issue('intruder', client=True)
    for source, name in [(other, 'other.pem'), (other_key, 'other.key'),
                         *((cluster.apps[0].link_dir / f'app.{kind}', f'app.{kind}') for kind in ('pem', 'key')),
                         *((cluster.edge.base / 'link' / f'edge.{kind}', f'edge.{kind}') for kind in ('pem', 'key'))]:
        shutil.copy(source, certs / name)
    marker = tmp_path / 'MARKER'
    served = {app.name: uwsgi_requests(app) for app in cluster.apps}
    cluster.network.add_host('test1')  # a namespace of the test's own, on the app network
    try:
        done = subprocess.run(
            [*cluster.network.wrap('test1'), sys.executable, '-m', 'tests.faults.intruder',
             *(f'{app.address}:{app.port}' for app in cluster.apps), '--marker', str(marker), '--certs', str(certs)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        cluster.network.remove_host('test1')
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    # What reached uwsgi: the control, once per host, and nothing else (nginx refused the rest
    # itself, without passing anything on).
    reached = {app.name: uwsgi_requests(app) - served[app.name] for app in cluster.apps}
    # No worker is left stuck: each host answers twice as many requests at once as it has threads.
    edge_cert = client_context(certs, 'edge')
    with ThreadPoolExecutor(16) as pool:
        parallel = list(pool.map(lambda app: ask(app.address, app.port, request('/healthz'), edge_cert, timeout=3),
                                 cluster.apps * 16))
    after = throughput(cluster)
    tcp = {app.name: tcp_listeners_besides_nginx(cluster, app) for app in cluster.apps}
    refused = [result for attempts in results.values() for name, result in attempts.items() if 'control' not in name]
    report('d. intruder: clear text and TLS without the edge\'s certificate, to every app host',
           [result.split(':')[0] for result in refused], marker_created=marker.exists(),
           reached_uwsgi=sum(reached.values()), uwsgi_tcp_ports=sum(map(len, tcp.values())),
           control='answered' if all('200 OK' in a["TLS, the edge's certificate (control)"]
                                     for a in results.values()) else 'NOT answered',
           reads_per_s_before=round(before), reads_per_s_after=round(after))
    print(json.dumps(results, indent=2))
    assert not marker.exists()
    assert all(result.startswith('refused') for result in refused), results
    assert reached == {app.name: 1 for app in cluster.apps}, reached
    assert tcp == {app.name: [] for app in cluster.apps}, tcp
    assert all("200 OK" in attempts["TLS, the edge's certificate (control)"] for attempts in results.values())
    assert all(answer == 'answered: HTTP/1.1 200 OK' for answer in parallel), parallel
    assert after >= 0.7 * before


def test_e_every_app_host_down(cluster):
    for app in cluster.apps:
        kill(app)
    answers = []
    for n in range(20):
        started = time.monotonic()
        status, headers, body = call(cluster, 'GET', READS[n % len(READS)], headers=bearer(cluster))
        answers.append((status, time.monotonic() - started, headers.get('Retry-After')))
    down_status = [a[0] for a in answers]
    returned = time.monotonic()
    for app in cluster.apps:
        restart(cluster, app)
    restarted = time.monotonic()
    first_ok = first_within(lambda: call(cluster, 'GET', '/api/admins', headers=bearer(cluster))[0] == 200
                            and time.monotonic(), 10, 'a read answered 200 again')
    report('e. every app host down: 20 reads, then the hosts return', down_status,
           max_wait_ms=round(max(a[1] for a in answers) * 1000), restart_s=round(restarted - returned, 1),
           serving_again_after_s=None if first_ok is None else round(first_ok - restarted, 2))
    assert set(down_status) <= {502, 503} and all(a[2] for a in answers)
    assert max(a[1] for a in answers) < CONNECT_TIMEOUT
    # nginx tries a host it marked failed again once its fail_timeout has passed, even when
    # every host is marked: the first read after their return waits for that, no more.
    assert first_ok is not None and first_ok - restarted < FAIL_TIMEOUT + 1
