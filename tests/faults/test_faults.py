"""The stack under load while things break: MariaDB restarts, killed connections, killed
workers, reloads, an exhausted pool, awkward clients. Nothing acknowledged may be lost."""
import json
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import closing

import MySQLdb
import pytest

from launcher.wait import wait_for
from tests.helpers import procs
from tests.helpers.load import Load, report
from tests.helpers.servers import admin_session
from tests.helpers.web import call

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def admin(stack):
    """One session of the database's administrator, for what must hold across statements."""
    return closing(admin_session({**stack.mariadb.admin_kwargs(), 'database': 'wsgiapp'}))


def writer(stack, tag):
    """request(n): a POST of a name unique to this scenario, its email derived from it."""
    headers = {'Content-Type': 'application/json', 'Authorization': f'Bearer {stack.token()}'}

    def request(n):
        name = f'{tag}-{n}'
        return 'POST', '/api/admins', json.dumps({'name': name, 'email': f'{name}@x.test'}).encode(), headers
    return request


def reader(stack):
    """request(n): a listing with the token, so that it passes nginx's cache and reaches uwsgi
    and MariaDB every time: these scenarios are about them (the cache has its own)."""
    read = ('GET', '/api/admins?limit=5', None, {'Authorization': f'Bearer {stack.token()}'})
    return lambda n: read


def mixed(stack, tag):
    write, read = writer(stack, tag), reader(stack)
    return lambda n: write(n) if n.endswith(('1', '3', '5', '7', '9')) else read(n)


def workers(stack):
    return procs.workers(stack.uwsgi.pid())


def test_mariadb_restart_answers_503_then_recovers_without_uwsgi_restart(stack):
    master = stack.uwsgi.pid()
    with Load(stack, mixed(stack, f'restart-{uuid.uuid4().hex[:6]}'), threads=4) as load:
        time.sleep(1)
        stack.mariadb.stop()
        down = time.monotonic()
        time.sleep(2)
        restarting = time.monotonic()
        stack.mariadb.start()
        back = time.monotonic()
        time.sleep(3)
    during = [a for a in load.answers if down <= a[0] < restarting]
    after = load.statuses(since=back + 2)
    report('1. MariaDB restarted under reads and writes', load.statuses(),
           outage=len(during), after_2s=len(after))
    assert during and {a[1] for a in during} == {503}
    assert all('Retry-After' in a[3] for a in during)
    assert 500 not in load.statuses() and 'error' not in load.statuses()
    assert max(a[2] for a in load.answers) < 12  # nothing hangs past the timeouts
    assert after and set(after) <= {200, 201}
    assert stack.uwsgi.pid() == master


def test_killed_connections_are_invisible_to_readers(stack):
    killed = 0
    with Load(stack, reader(stack), threads=4, seconds=30) as load:
        for _ in range(3):
            time.sleep(1)
            for (connection,) in stack.mariadb.sql("SELECT id FROM information_schema.processlist "
                                                   "WHERE user = 'wsgiapp'"):
                try:
                    stack.mariadb.sql(f'KILL CONNECTION {connection}')
                    killed += 1
                except MySQLdb.OperationalError:  # it had ended by itself
                    pass
        time.sleep(1)
    report('2. every app connection killed, 3 times', load.statuses(), killed=killed)
    assert killed >= 3
    assert set(load.statuses()) == {200}


def test_a_killed_worker_costs_at_most_its_requests_in_flight(stack):
    before = workers(stack)
    with Load(stack, reader(stack), threads=4, seconds=30) as load:
        time.sleep(1.5)
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: len(workers(stack)) == len(before) and before[0] not in workers(stack), 15,
                 'the master to replace the killed worker')
        time.sleep(1.5)
    failed = [s for s in load.statuses() if s != 200]
    report('3. a uwsgi worker SIGKILLed', load.statuses(), failed=len(failed))
    assert len(failed) <= 4  # threads per worker: only what it had in flight
    assert set(load.statuses(since=load.answers[-1][0] - 1)) == {200}


def test_graceful_reload_fails_no_request(stack):
    with Load(stack, mixed(stack, f'reload-{uuid.uuid4().hex[:6]}'), threads=4, seconds=30) as load:
        time.sleep(1)
        stack.uwsgi.reload()
        time.sleep(1)
        stack.uwsgi.reload()
        time.sleep(2)
    report('4. uwsgi reloaded gracefully twice', load.statuses())
    assert set(load.statuses()) <= {200, 201} and 201 in load.statuses()


@pytest.mark.slow
def test_acknowledged_writes_survive_killed_workers_and_database_crashes(stack):
    tag = f'acked-{uuid.uuid4().hex[:6]}'
    with Load(stack, writer(stack, tag), threads=4, seconds=60) as load:
        time.sleep(2)
        os.kill(workers(stack)[0], signal.SIGKILL)
        time.sleep(2)
        stack.mariadb.stop()                          # a clean shutdown
        stack.mariadb.start()
        time.sleep(2)
        os.kill(stack.mariadb.pid(), signal.SIGKILL)  # a crash: InnoDB recovers from its log
        time.sleep(1)
        stack.mariadb.start()
        time.sleep(2)
        os.kill(workers(stack)[-1], signal.SIGKILL)
        time.sleep(2)
    acked = {}  # name -> id, as the 201 said; names are unique, ids can be reused after a crash
    for _, status, _, _, body, sent in load.answers:
        if status == 201:
            item = json.loads(body)
            assert json.loads(sent)['name'] == item['name']
            acked[item['name']] = item['id']
    rows = stack.mariadb.sql(('SELECT id, name, email FROM vc_admin WHERE name LIKE %s', (f'{tag}-%',)),
                             database='wsgiapp')
    found = {name: admin_id for admin_id, name, _ in rows}
    kept = sum(1 for name, admin_id in acked.items() if found.get(name) == admin_id)
    report('5. writes while workers and MariaDB are killed', load.statuses(), acked=len(acked), found=kept)
    assert len(acked) > 100
    assert kept == len(acked)                                              # none lost
    assert len(rows) == len(found)                                         # none twice
    assert all(email == f'{name}@x.test' for _, name, email in rows)      # none half-written
    assert 500 not in load.statuses()


@pytest.mark.slow
def test_exhausted_pool_waits_boundedly_then_503_and_recovers(stack):
    stack.uwsgi.stop()
    small = ['--env', 'WSGIAPP_POOL_SIZE=1', '--env', 'WSGIAPP_POOL_TIMEOUT=0.5', '--env', 'WSGIAPP_DB_READ_TIMEOUT=3']
    stack.uwsgi.start(stack.environ(), args=small)
    try:
        with admin(stack) as sql, Load(stack, reader(stack), threads=12, seconds=30) as load:
            time.sleep(0.5)
            sql('LOCK TABLES vc_admin WRITE')  # every query now waits: a slow query
            locked = time.monotonic()
            time.sleep(2.5)
            sql('UNLOCK TABLES')
            unlocked = time.monotonic()
            time.sleep(2)
        statuses = load.statuses()
        report('6. pool of 1 per process, 12 clients, a 2.5 s lock', statuses)
        during = [a for a in load.answers if locked <= a[0] < unlocked]
        assert set(statuses) <= {200, 503}
        assert 503 in [a[1] for a in during]
        assert all('Retry-After' in a[3] for a in load.answers if a[1] == 503)
        assert max(a[2] for a in load.answers) < 8  # bounded: never a deadlock
        assert set(load.statuses(since=unlocked + 1)) == {200}
    finally:
        stack.uwsgi.stop()
        stack.uwsgi.start(stack.environ())


def tls_socket(stack, timeout):
    plain = socket.create_connection(('127.0.0.1', stack.tls_port), timeout=timeout)
    return stack.ssl_context().wrap_socket(plain, server_hostname='127.0.0.1')


def raw(stack, data, read=False, close_after=0.0):
    with tls_socket(stack, 10) as client:
        client.sendall(data)
        time.sleep(close_after)
        return client.recv(65536) if read else b''


def test_awkward_clients_through_nginx(stack):
    log_before = stack.uwsgi.log.read_text()
    statuses = []
    # Long headers within nginx's limits are answered, never a 502.
    statuses.append(call(stack, 'GET', '/api/admins', headers={'X-Long': 'v' * 7500})[0])
    many = {f'X-H{n}': 'v' * 5000 for n in range(4)}
    statuses.append(call(stack, 'GET', '/', headers=many)[0])
    assert statuses == [200, 200]
    too_long = call(stack, 'GET', '/', headers={'Cookie': 'c=' + 'v' * 9000})[0]
    assert too_long == 400  # nginx's own limit, cleanly
    # Clients that go away mid-request and mid-response.
    for _ in range(30):
        raw(stack, b'POST /api/admins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                        b'Content-Length: 1000\r\n\r\n{"name": "x')
        raw(stack, b'GET /admins?limit=100 HTTP/1.1\r\nHost: x\r\n\r\n')
    # A slow client dribbling its body: nginx buffers it, no uwsgi thread waits for it.
    slow_done = []

    def dribble():
        body = json.dumps({'name': f'slow-{uuid.uuid4().hex[:8]}', 'email': 's@x.test'}).encode()
        with tls_socket(stack, 30) as client:
            client.sendall(b'POST /api/admins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                           + f'Authorization: Bearer {stack.token()}\r\nContent-Length: {len(body)}\r\n'
                             f'Connection: close\r\n\r\n'.encode())
            for byte in body:
                client.sendall(bytes([byte]))
                time.sleep(3 / len(body))
            slow_done.append(int(client.recv(65536).split(b' ', 2)[1]))
    dribblers = [threading.Thread(target=dribble) for _ in range(12)]  # more than uwsgi's 8 threads
    for thread in dribblers:
        thread.start()
    time.sleep(0.5)
    quick = []
    for _ in range(20):
        started = time.monotonic()
        quick.append((call(stack, 'GET', '/api/admins?limit=1')[0], time.monotonic() - started))
    for thread in dribblers:
        thread.join()
    statuses += [s for s, _ in quick]
    report('9. long headers, 60 disconnects, 12 slow bodies', statuses + [too_long] + slow_done,
           slowest_quick_ms=int(max(t for _, t in quick) * 1000))
    assert all(s == 200 for s, _ in quick) and max(t for _, t in quick) < 1.0
    assert slow_done == [201] * 12
    new_log = stack.uwsgi.log.read_text()[len(log_before):]
    assert not any(word in new_log for word in ('Traceback', 'IOError', 'error', 'SIGPIPE')), new_log[-2000:]
    assert call(stack, 'GET', '/healthz')[0] == 200


def test_no_secret_reaches_a_log(stack):
    call(stack, 'POST', '/api/admins', b'{}', {'Authorization': 'Bearer wrong', 'Content-Type': 'application/json'})
    password = stack.mariadb.password()
    for log in stack.base.rglob('*.log'):
        text = log.read_text(errors='replace')
        assert password not in text and stack.token() not in text, log
