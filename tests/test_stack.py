"""The launcher as a user meets it: ports changed on a running stack, the environment an
operator sets winning over conf/uwsgi.ini's defaults, a malformed setting stopping uwsgi
with its name, and a checkout that nginx's user cannot enter."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.process import ROOT, free_port
from launcher.single import Stack
from launcher.wait import wait_for
from tests.helpers.servers import new_base
from tests.helpers.web import request

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


@pytest.fixture
def base():
    path = new_base()
    yield path
    Stack(path).down()
    shutil.rmtree(path, ignore_errors=True)


def listening(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def make(base, *args, port=None, tls_port=None, **run):
    """`make -s VAR=base [PORT= TLS_PORT=] args` as a user runs it; `run`: more of subprocess.run's
    arguments (input=...)."""
    env = {**os.environ, 'VENV': str(Path(sys.executable).parent.parent)}
    ports = [f'PORT={port}', f'TLS_PORT={tls_port}'] if port else []
    return subprocess.run(['make', '-s', f'VAR={base}', *ports, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **run)


def test_make_run_with_another_port_moves_nginx_and_says_so(base):
    port, tls_port, new_port, new_tls_port = (free_port() for _ in range(4))
    assert make(base, 'run', port=port, tls_port=tls_port).returncode == 0
    nginx_pid = Stack(base).nginx.pid()
    moved = make(base, 'run', port=new_port, tls_port=new_tls_port)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f'reloading it to serve https://127.0.0.1:{new_tls_port}/' in moved.stdout
    stack = Stack(base, new_port, new_tls_port)
    assert stack.nginx.pid() == nginx_pid  # reloaded, not restarted
    assert request(stack, 'GET', '/healthz')[0] == 200
    # The old workers finish what they were doing, then let go of the old port.
    wait_for(lambda: not listening(tls_port), 10, f'nginx to stop listening on the old port {tls_port}')
    # status names the ports nginx really listens on, whatever it is asked with
    status = make(base, 'status', port=port, tls_port=tls_port)
    assert f'https://127.0.0.1:{new_tls_port}/' in status.stdout
    again = make(base, 'run', port=new_port, tls_port=new_tls_port)
    assert again.returncode == 0 and 'nginx is already running' in again.stdout


def test_make_sql_shows_names_as_the_app_stored_them(stack):
    """make sql's client speaks utf8mb4, as the app does: a name with a character outside
    the BMP reads back whole in the shell, not with '?' for it."""
    name = 'sql shell \U0001F680'
    admin_sql(stack, f"INSERT INTO vc_admin (name, email) VALUES ('{name}', 'shell@example.org')")
    try:
        shown = make(stack.base, 'sql', input="SELECT name FROM vc_admin WHERE email = 'shell@example.org';\n")
    finally:
        admin_sql(stack, "DELETE FROM vc_admin WHERE email = 'shell@example.org'")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1:] == [name]


def admin_sql(stack, statement):
    """Rows of one statement, run as the private MariaDB's administrator (autocommit)."""
    return stack.mariadb.sql(statement, database='wsgiapp')


def app_connections(stack):
    return admin_sql(stack, "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'wsgiapp'")[0][0]


def burst(stack, threads=16, each=10):
    statuses = []
    private = {'Authorization': f'Bearer {stack.token()}'}  # past nginx's cache: every read reaches uwsgi

    def run():
        for _ in range(each):
            statuses.append(request(stack, 'GET', '/api/admins?limit=5', headers=private)[0])
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def test_the_operators_pool_size_wins_over_the_ini_default(stack):
    stack.uwsgi.stop()
    try:
        stack.uwsgi.start({**stack.environ(), 'WSGIAPP_POOL_SIZE': '1'})
        assert set(burst(stack)) == {200}
        assert 1 <= app_connections(stack) <= 2  # 2 processes x 1, not conf/uwsgi.ini's 2 x 4
    finally:
        stack.uwsgi.stop()
        stack.uwsgi.start(stack.environ())
    assert set(burst(stack)) == {200}
    assert app_connections(stack) > 2  # the ini's default, 4 per process, applies when unset


@pytest.mark.parametrize('variable, value', [('WSGIAPP_POOL_SIZE', 'four'), ('WSGIAPP_POOL_TIMEOUT', '-1'),
                                             ('WSGIAPP_MAX_BODY', '1e99')])
def test_a_malformed_setting_stops_uwsgi_naming_it(stack, variable, value):
    stack.uwsgi.stop()
    log_before = stack.uwsgi.log.read_text()
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match='uwsgi did not start'):
            stack.uwsgi.start({**stack.environ(), variable: value})
        new_log = stack.uwsgi.log.read_text()[len(log_before):]
        assert time.monotonic() - started < 20, new_log
        assert variable in new_log and 'must be a number' in new_log
        assert value not in new_log.replace(variable, '')  # the value itself is not echoed
    finally:
        stack.uwsgi.stop()
        stack.uwsgi.start(stack.environ())


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, nginx's workers run as www-data")
def test_a_stack_in_a_directory_nginx_cannot_enter_still_serves(tmp_path):
    """`make run` from a clone under /root or in a `mktemp -d` directory (mode 0700)."""
    tmp_path.chmod(0o700)
    running = Stack(tmp_path / 'var', free_port())
    try:
        running.up()
        status, _, body = request(running, 'GET', '/admins')
        assert status == 200 and '张三'.encode() in body
        assert request(running, 'GET', '/static/style.css')[0] == 200
        assert not str(running.run_dir).startswith(str(tmp_path))  # where www-data can reach it
        assert running.check() == 0
    finally:
        running.down()
    assert not running.run_dir.exists()


def test_a_second_make_run_does_not_bring_back_deleted_sample_rows(stack):
    count = 'SELECT COUNT(*) FROM vc_admin'
    before = admin_sql(stack, count)[0][0]
    admin_sql(stack, "DELETE FROM vc_admin WHERE name = 'alice'")
    stack.up()  # what `make run` does on a running stack
    assert admin_sql(stack, count)[0][0] == before - 1


def test_uwsgi_never_serves_as_root(stack):
    """Started as root by `make run`, uwsgi's workers, which accept and parse every request,
    are the system user wsgiapp from their fork on (conf/uwsgi.ini's uid and gid), and so is
    the metrics mule, which drops root itself; the master keeps root only to re-execute on a
    reload; its socket stays 0660 for nginx's group."""
    import grp
    import stat

    from launcher import procs
    master = stack.uwsgi.pid()
    workers = procs.children(master)
    assert sorted(' '.join(process.cmdline()).split('uWSGI ')[-1] for process in workers) == [
        'mule 1', 'worker 1', 'worker 2']
    for process in workers:
        assert 0 not in process.uids() and 0 not in process.gids(), (process.pid, process.uids())
    mode = stack.uwsgi.socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o660
    if os.geteuid() == 0:
        assert grp.getgrgid(mode.st_gid).gr_name == 'www-data'
        assert {process.username() for process in workers} == {'wsgiapp'}
