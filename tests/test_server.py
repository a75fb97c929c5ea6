"""The unit's promises (conf/systemd/wsgiapp.service), on the live service, on each kind of
single server, with real systemd, nginx and MariaDB: the one tests/test_deploy.py booted and
deployed by docs/deploy.rst's steps, and the one the playbook (deploy/site.yml) makes from
an inventory of one host in every group (docs/playbook.rst). What tests/test_systemd.py
checks offline, checked here where systemd enforces it: the security score, the sandbox
seen from inside the service's own namespaces, and what systemctl restart, reload, stop and
a killed master do to requests and processes."""
import re
import socket
import ssl
import threading
import time

import pytest

from launcher.logs import entries
from launcher.process import ROOT
from launcher.server import DOMAIN
from launcher.wait import wait_for
from tests.helpers.fleet import playbook_server
from tests.test_deploy import deployed_server

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb, pytest.mark.server]
UNIT = ROOT / 'conf' / 'systemd' / 'wsgiapp.service'


@pytest.fixture(params=['deploy-steps', 'playbook'])
def server(request):
    if request.param == 'playbook':
        return playbook_server(request, DOMAIN)
    return deployed_server(request)


@pytest.fixture
def machine(server):
    return server['machine']


def get(server, path, headers=''):
    """GET https://DOMAIN/path from the host through nginx, trusting pebble's root: (status, headers, body)."""
    context = ssl.create_default_context(cafile=str(server['pebble_root']))
    with socket.create_connection((server['machine'].address, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        tls.sendall(f'GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n{headers}Connection: close\r\n\r\n'.encode())
        answer = b''
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    fields = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


class Trickle:
    """A steady trickle of requests through nginx (one every `interval` s, each its own
    query string so the micro-cache never answers), recording each one's status or error."""

    def __init__(self, server, interval=0.02):
        self.server, self.interval = server, interval
        self.results, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        number = 0
        while not self._stop.is_set():
            number += 1
            try:
                self.results.append(get(self.server, f'/healthz?trickle={number}')[0])
            except OSError as error:
                self.results.append(repr(error))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        wait_for(lambda: len(self.results) >= 10, 30, 'the trickle to get going')
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # requests after the event too
        self._stop.set()
        self._thread.join(30)

    def failed(self):
        return [result for result in self.results if result != 200]


def service(machine, *properties):
    shown = machine.run(['systemctl', 'show', 'wsgiapp', '-p', ','.join(properties)]).stdout
    return dict(line.split('=', 1) for line in shown.splitlines())


def main_pid(machine):
    return int(service(machine, 'MainPID')['MainPID'])


def in_service(machine, script, pid=None):
    """`script` run by sh inside the service's mount namespace (nsenter into its main pid),
    as root: what the sandbox hides or makes read-only, it does so for root too."""
    pid = pid or main_pid(machine)
    return machine.run(['nsenter', '-t', str(pid), '-m', 'sh', '-c', script], check=False)


def status(machine, pid):
    return dict(line.split(':', 1) for line in machine.read(f'/proc/{pid}/status').splitlines())


def running(machine):
    shown = service(machine, 'ActiveState', 'SubState', 'MainPID')
    return shown['ActiveState'] == 'active' and shown['SubState'] == 'running' and int(shown['MainPID'])


def test_the_live_unit_scores_what_it_promises(machine):
    promised = re.search(r'`systemd-analyze security wsgiapp` scores this unit ([\d.]+)', UNIT.read_text())
    assert promised, 'the unit no longer says what it scores'
    done = machine.run(['systemd-analyze', 'security', '--no-pager', 'wsgiapp'])
    score = re.search(r'Overall exposure level for wsgiapp.service: ([\d.]+)', done.stdout)
    assert score, done.stdout + done.stderr
    assert float(score.group(1)) == float(promised.group(1)), done.stdout


def test_the_service_cannot_write_outside_its_runtime_directory(machine):
    # ProtectSystem=strict: the file system is read-only in its namespace, even for root;
    # /run/wsgiapp (RuntimeDirectory=) and its private /tmp are writable.
    for path in ('/srv/wsgiapp/probe', '/etc/probe', '/var/lib/probe', '/usr/probe', '/var/log/probe'):
        done = in_service(machine, f'touch {path}')
        assert done.returncode != 0 and 'Read-only file system' in done.stderr, (path, done.stderr)
    done = in_service(machine, 'touch /run/wsgiapp/probe /tmp/probe && rm /run/wsgiapp/probe /tmp/probe')
    assert done.returncode == 0, done.stderr
    # PrivateTmp=: its /tmp is not the server's.
    machine.run('touch /tmp/outside-probe')
    try:
        assert in_service(machine, 'test -e /tmp/outside-probe').returncode != 0
    finally:
        machine.run('rm -f /tmp/outside-probe')


def test_the_service_cannot_see_home_directories(machine):
    # ProtectHome=true: /root and /home are empty and closed inside, though /root holds the
    # deployed repository outside.
    assert machine.run(['ls', '-A', '/root']).stdout.strip()  # there is something to hide
    machine.run('install -d /home/someone && touch /home/someone/secret')
    try:
        for path in ('/root', '/home'):
            done = in_service(machine, f'ls -A {path}')
            assert done.stdout.strip() == '', (path, done.stdout)
    finally:
        machine.run('rm -rf /home/someone')


def test_every_process_of_the_service_runs_as_its_user_without_capabilities(machine):
    uid = machine.run(['id', '-u', 'wsgiapp']).stdout.strip()
    gid = machine.run(['id', '-g', 'wsgiapp']).stdout.strip()
    sock_gid = machine.run(['getent', 'group', 'wsgiapp-sock']).stdout.split(':')[2]
    pids = machine.run(['pgrep', '-u', 'wsgiapp']).stdout.split()
    main = main_pid(machine)
    assert str(main) in pids and len(pids) >= 3  # the master and its two workers
    for pid in pids:
        assert machine.read(f'/proc/{pid}/cgroup').strip().endswith('/system.slice/wsgiapp.service')
        fields = status(machine, pid)
        assert fields['Uid'].split() == [uid] * 4 and fields['Gid'].split() == [gid] * 4, fields
        assert sorted(fields['Groups'].split()) == sorted([gid, sock_gid])
        assert int(fields['CapEff'], 16) == 0 and int(fields['CapPrm'], 16) == 0 and int(fields['CapBnd'], 16) == 0
        assert fields['NoNewPrivs'].strip() == '1'
        assert fields['Seccomp'].strip() == '2'  # SystemCallFilter=
        assert fields['Umask'].strip() == '0027'  # UMask=
    socket_path = machine.run(['stat', '-c', '%U:%G %a', '/run/wsgiapp/uwsgi.sock']).stdout.split()
    assert socket_path == ['wsgiapp:wsgiapp-sock', '660']


def test_the_journal_holds_the_apps_log_lines_with_request_ids(server, machine):
    """With MariaDB stopped, the app logs the failure with the request's id (nginx's), which
    the client gets back as X-Request-ID: one id in the answer, nginx's log and the journal."""
    # Debian's mariadb.socket would start it again at the app's first connection.
    sockets = machine.run(['systemctl', 'is-active', 'mariadb.socket'], check=False).stdout.strip() == 'active'
    machine.run(['systemctl', 'stop', 'mariadb.socket', 'mariadb.service'])
    try:
        code, headers, _ = get(server, f'/api/admins?after={time.monotonic_ns() % 10**6}')
    finally:
        machine.run(['systemctl', 'start', *(['mariadb.socket'] if sockets else []), 'mariadb.service'])
    assert code == 503
    request_id = headers['x-request-id']

    def logged(*options):
        journal = machine.run(['journalctl', *options, '--no-pager', '-o', 'cat']).stdout
        return [line for line in entries(journal) if line.get('request_id') == request_id]
    # The app's line and nginx's, as JSON with the same id, in the journal.
    lines = wait_for(lambda: logged('-u', 'wsgiapp'), 10, f'request {request_id} in journalctl -u wsgiapp')
    assert lines[0]['level'] == 'error' and 'database unavailable' in lines[0]['message'], lines
    access = wait_for(lambda: logged('-t', 'wsgiapp_access'), 10, f'{request_id} in journalctl -t wsgiapp_access')
    assert access[0]['status'] == '503' and access[0]['uri'].startswith('/api/admins?after='), access
    assert request_id in machine.read('/var/log/nginx/wsgiapp.access.log')
    statuses = []

    def back():
        statuses.append(get(server, f'/api/admins?after={time.monotonic_ns() % 10**6}')[0])
        return statuses[-1] == 200
    wait_for(back, 60, 'the database back', interval=0.5, detail=lambda: f'statuses: {statuses}')


def test_reload_is_graceful(server, machine):
    """systemctl reload (SIGHUP): the workers (and the metrics mule: three children) are
    replaced, and no request fails."""
    main = main_pid(machine)
    workers = set(machine.run(['pgrep', '-P', str(main)]).stdout.split())
    with Trickle(server) as trickle:
        machine.run(['systemctl', 'reload', 'wsgiapp'])
        wait_for(lambda: (set(machine.run(['pgrep', '-P', str(main)], check=False).stdout.split()) - workers
                          and len(machine.run(['pgrep', '-P', str(main)], check=False).stdout.split()) == 3),
                 60, 'new workers after the reload')
    assert main_pid(machine) == main  # the same master: a reload, not a restart
    print(f'reload: {len(trickle.results)} requests, failed: {trickle.failed()}')
    assert len(trickle.results) > 20 and trickle.failed() == []


def test_restart_under_a_trickle_of_requests(server, machine):
    """systemctl restart: the old uwsgi stops (its socket goes) before the new one listens.
    nginx answers the requests that arrive in between itself, 502 with Retry-After (nothing
    can accept them: one socket, one service); the count is measured and bounded, and every
    other request succeeds. `systemctl reload` is the way to deploy without a failed request."""
    before = main_pid(machine)
    with Trickle(server) as trickle:
        started = time.monotonic()
        machine.run(['systemctl', 'restart', 'wsgiapp'])
        took = time.monotonic() - started
    failed = trickle.failed()
    print(f'restart: {took:.2f} s; {len(trickle.results)} requests, {len(failed)} failed: {sorted(set(failed))}')
    assert main_pid(machine) != before
    assert set(failed) <= {502}, failed  # nginx's own answer, never a reset or a hang
    assert len(failed) <= 5 + (took / trickle.interval), failed
    assert trickle.results[-10:] == [200] * 10


def test_a_killed_master_is_restarted(server, machine):
    """Restart=on-failure: SIGKILL the master; systemd starts a new one (RestartSec=2)."""
    before = main_pid(machine)
    restarts = int(service(machine, 'NRestarts')['NRestarts'])
    machine.run(['kill', '-KILL', str(before)])

    def restarted():
        pid = running(machine)
        return pid if pid and pid != before else None
    wait_for(restarted, 60, 'a new uwsgi master after SIGKILL')
    assert int(service(machine, 'NRestarts')['NRestarts']) == restarts + 1
    wait_for(lambda: get(server, f'/healthz?after-kill={time.monotonic_ns()}')[0] == 200, 30, 'the app answering')


def test_stop_leaves_no_process_and_no_runtime_directory(server, machine):
    machine.run(['systemctl', 'stop', 'wsgiapp'])
    try:
        assert machine.run(['pgrep', '-u', 'wsgiapp'], check=False).stdout == ''
        assert service(machine, 'ActiveState', 'MainPID') == {'ActiveState': 'inactive', 'MainPID': '0'}
        assert machine.run(['test', '-e', '/run/wsgiapp'], check=False).returncode != 0
        assert get(server, '/healthz?stopped')[0] == 502
    finally:
        machine.run(['systemctl', 'start', 'wsgiapp'])
    assert get(server, '/healthz?started')[0] == 200
