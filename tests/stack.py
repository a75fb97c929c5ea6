"""Private servers for `make run`, the tests and the benchmark: MariaDB, uwsgi and nginx,
each with its data, socket, pid file and log under one directory of ours (var/ for
`make run`), never the system's server, never port 3306, never root-owned state.

    python -m tests.stack up|down|status VAR_DIR [--port PORT]
"""
import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
APP_USER = 'wsgiapp'
APP_DATABASE = 'wsgiapp'


def binary(name):
    """A server's path: Debian puts mariadbd and nginx in /usr/sbin, which a non-root
    user's PATH often lacks."""
    found = shutil.which(name, path=f'{os.environ.get("PATH", "")}:/usr/local/sbin:/usr/sbin:/sbin')
    if found is None:
        raise RuntimeError(f'{name} is not installed (make installs the Debian packages it needs)')
    return found


def say(message):
    print(f'==> {message}', flush=True)


def process_alive(pid):
    """True for a running process; False for none or a zombie (exited, not yet reaped)."""
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def _pid_alive(pidfile):
    """The pid in `pidfile` if that process runs, else None."""
    try:
        pid = int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


def _wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process_alive(pid):
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            except ChildProcessError:
                pass
            return True
        time.sleep(0.05)
    return False


def _terminate(name, pid, first, patience, last):
    """Send `first`; if the process outlives `patience` seconds, send `last`."""
    say(f'stopping {name} (pid {pid})')
    os.kill(pid, first)
    if not _wait_gone(pid, patience):
        os.kill(pid, last)
        _wait_gone(pid, 10)


def _tail(path, lines=20):
    try:
        return '\n'.join(Path(path).read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


class MariaDB:
    """A mariadbd of our own: unix socket only, or also TCP on 127.0.0.1:port when given."""

    def __init__(self, base, port=None):
        self.base = Path(base).resolve()
        self.datadir = self.base / 'mariadb'
        # Socket and pid file in a directory only we can enter: root has no password here.
        self.run_dir = self.base / 'mariadb-run'
        self.socket = self.run_dir / 'mysqld.sock'
        self.pidfile = self.run_dir / 'mysqld.pid'
        self.log = self.base / 'mariadb.log'
        self.port = port

    def pid(self):
        return _pid_alive(self.pidfile)

    def _password(self):
        path = self.base / 'db-password'
        if not path.exists():
            # URL-hostile characters on purpose: DATABASE_URL must percent-encode them.
            path.write_text(secrets.token_urlsafe(18) + '@:/%#')
            path.chmod(0o600)
        return path.read_text()

    def admin_kwargs(self):
        return {'unix_socket': str(self.socket), 'user': 'root', 'charset': 'utf8mb4', 'autocommit': True}

    def url(self, tcp=False):
        """DATABASE_URL of the application user (only SELECT, INSERT, UPDATE, DELETE)."""
        credentials = f'{APP_USER}:{quote(self._password(), safe="")}'
        if tcp:
            return f'mysql://{credentials}@127.0.0.1:{self.port}/{APP_DATABASE}'
        return f'mysql://{credentials}@localhost/{APP_DATABASE}?unix_socket={self.socket}'

    def admin_url(self):
        return f'mysql://root@localhost/{APP_DATABASE}?unix_socket={self.socket}'

    def start(self):
        if self.pid():
            say(f'MariaDB is already running (pid {self.pid()}, socket {self.socket})')
        else:
            self._start()
        self._wait_ready()
        self._create_app_user()

    def _start(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)
        as_root = ['--user=root'] if os.geteuid() == 0 else []
        if not (self.datadir / 'mysql').is_dir():
            say(f'creating a private MariaDB data directory in {self.datadir}')
            subprocess.run(
                [binary('mariadb-install-db'), '--no-defaults', f'--datadir={self.datadir}',
                 '--auth-root-authentication-method=normal', '--skip-test-db', *as_root],
                check=True, stdout=subprocess.DEVNULL, stderr=open(self.log, 'ab'))
        network = ([f'--port={self.port}', '--bind-address=127.0.0.1'] if self.port
                   else ['--skip-networking'])
        say(f'starting MariaDB on {self.socket}' + (f' and 127.0.0.1:{self.port}' if self.port else ''))
        subprocess.Popen(
            [binary('mariadbd'), '--no-defaults', f'--datadir={self.datadir}', f'--socket={self.socket}',
             f'--pid-file={self.pidfile}', f'--log-error={self.log}', *network, *as_root,
             '--character-set-server=utf8mb4', '--collation-server=utf8mb4_bin',
             '--innodb-buffer-pool-size=256M', '--max-connections=1000', '--skip-name-resolve',
             # Said aloud because tests/faults relies on it: a commit is on disk before the
             # app acknowledges it, so a SIGKILLed mariadbd loses no acknowledged write.
             '--innodb-flush-log-at-trx-commit=1'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _wait_ready(self, seconds=60):
        import MySQLdb
        deadline = time.monotonic() + seconds
        while True:
            try:
                MySQLdb.connect(**self.admin_kwargs(), connect_timeout=2).close()
                return
            except MySQLdb.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'MariaDB did not start; its log says:\n{_tail(self.log)}')
                time.sleep(0.1)

    def _create_app_user(self):
        import MySQLdb
        con = MySQLdb.connect(**self.admin_kwargs())
        cursor = con.cursor()
        cursor.execute(f'CREATE DATABASE IF NOT EXISTS {APP_DATABASE} CHARACTER SET utf8mb4')
        for host in ('localhost', '127.0.0.1'):
            cursor.execute(f"CREATE USER IF NOT EXISTS '{APP_USER}'@'{host}' IDENTIFIED BY %s",
                           (self._password(),))
            cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {APP_DATABASE}.* TO '{APP_USER}'@'{host}'")
        con.close()

    def stop(self):
        pid = self.pid()
        if pid:
            _terminate('MariaDB', pid, signal.SIGTERM, 60, signal.SIGKILL)
        for leftover in (self.socket, self.pidfile):
            leftover.unlink(missing_ok=True)


def _owner():
    """user:group for the uwsgi socket. As root, nginx's workers run as www-data (see
    Nginx.render), so the socket goes to that group, as in production."""
    import grp
    import pwd
    if os.geteuid() == 0:
        return 'root:www-data'
    return f'{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}'


class Uwsgi:
    """uwsgi from the virtualenv, run with conf/uwsgi.ini as is; only the run directory
    and the socket owner come from the environment, as systemd's unit sets them."""

    def __init__(self, base, ini=ROOT / 'conf' / 'uwsgi.ini'):
        self.base = Path(base).resolve()
        self.run_dir = self.base / 'run'
        self.socket = self.run_dir / 'uwsgi.sock'
        self.pidfile = self.run_dir / 'uwsgi.pid'
        self.stats = self.run_dir / 'stats.sock'
        self.log = self.base / 'uwsgi.log'
        self.ini = ini

    def pid(self):
        return _pid_alive(self.pidfile)

    def start(self, environ, args=()):
        if self.pid():
            say(f'uwsgi is already running (pid {self.pid()}, socket {self.socket})')
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, 'WSGIAPP_RUN_DIR': str(self.run_dir), 'WSGIAPP_SOCKET_OWNER': _owner(), **environ}
        say(f'starting uwsgi on {self.socket} (log: {self.log})')
        with open(self.log, 'ab') as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / 'uwsgi'), '--ini', str(self.ini), *args],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.socket.exists() and self.pid()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'uwsgi did not start; its log says:\n{_tail(self.log)}')
            time.sleep(0.05)

    def reload(self):
        os.kill(self.pid(), signal.SIGHUP)

    def stop(self):
        pid = self.pid()
        if pid:
            # die-on-term: on SIGTERM the master stops its workers, then itself.
            _terminate('uwsgi', pid, signal.SIGTERM, 40, signal.SIGKILL)
            # The master leads its own process group (start_new_session): nothing of it may
            # outlive it, even a worker it lost track of.
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for leftover in (self.socket, self.pidfile, self.stats):
            leftover.unlink(missing_ok=True)


class Nginx:
    """nginx with a config generated from conf/nginx/wsgiapp.conf: the same site, with
    only the listen address, the paths and the logs moved under our directory."""

    def __init__(self, base, port, upstream, user='www-data' if os.geteuid() == 0 else None):
        self.base = Path(base).resolve()
        self.port = port
        self.upstream = upstream
        self.user = user  # nginx's workers; the directive only applies when started as root
        self.conf = self.base / 'nginx.conf'
        self.site = self.base / 'nginx-site.conf'
        self.pidfile = self.base / 'nginx.pid'
        self.error_log = self.base / 'nginx-error.log'
        self.access_log = self.base / 'nginx-access.log'

    def pid(self):
        return _pid_alive(self.pidfile)

    def render(self):
        site = (ROOT / 'conf' / 'nginx' / 'wsgiapp.conf').read_text()
        for old, new in [('listen 80;', f'listen 127.0.0.1:{self.port};'),
                         ('/srv/wsgiapp/conf/static', str(ROOT / 'conf' / 'static')),
                         ('unix:/run/wsgiapp/uwsgi.sock', f'unix:{self.upstream}'),
                         ('/var/log/nginx/wsgiapp.access.log', str(self.access_log)),
                         ('/var/log/nginx/wsgiapp.error.log', str(self.error_log))]:
            if old not in site:
                raise RuntimeError(f'conf/nginx/wsgiapp.conf no longer contains {old!r}')
            site = site.replace(old, new)
        self.site.write_text(site)
        shutil.copy('/etc/nginx/uwsgi_params', self.base / 'uwsgi_params')
        temp = self.base / 'nginx-temp'
        temp.mkdir(exist_ok=True)
        # As root, workers drop to www-data as Debian's nginx does; otherwise they run as us.
        user = f'user {self.user};\n' if self.user else ''
        self.conf.write_text(
            f'# Generated from conf/nginx/wsgiapp.conf by tests/stack.py: edit that file instead.\n'
            f'{user}worker_processes 1;\npid {self.pidfile};\nerror_log {self.error_log} warn;\n'
            'events { worker_connections 1024; }\n'
            'http {\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n'
            '    sendfile on;\n    tcp_nopush on;\n    keepalive_timeout 65;\n'
            + ''.join(f'    {kind}_temp_path {temp}/{kind};\n'
                      for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
            + f'    include {self.site};\n}}\n')

    def start(self):
        if self.pid():
            say(f'nginx is already running (pid {self.pid()}, port {self.port})')
            return
        self.render()
        say(f'starting nginx on http://127.0.0.1:{self.port}/ (config: {self.conf})')
        done = subprocess.run([binary('nginx'), '-p', str(self.base), '-c', str(self.conf)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f'nginx did not start:\n{done.stderr}{_tail(self.error_log)}')

    def stop(self):
        pid = self.pid()
        if pid:
            # SIGQUIT is nginx's graceful stop: requests in flight are finished first.
            _terminate('nginx', pid, signal.SIGQUIT, 15, signal.SIGTERM)
        self.pidfile.unlink(missing_ok=True)


class Stack:
    """MariaDB, uwsgi and nginx under one directory: what `make run` starts."""

    def __init__(self, base, port=8080):
        self.base = Path(base).resolve()
        self.port = port
        self.mariadb = MariaDB(self.base)
        self.uwsgi = Uwsgi(self.base)
        self.nginx = Nginx(self.base, port, self.uwsgi.socket)
        self.url = f'http://127.0.0.1:{port}'

    def token(self):
        path = self.base / 'api-token'
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text()

    def environ(self):
        """What systemd's EnvironmentFile= holds in production."""
        return {'DATABASE_URL': self.mariadb.url(), 'WSGIAPP_API_TOKEN': self.token()}

    def up(self, sample=True):
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # nginx's workers (www-data, when we are root) must reach the socket
        self.mariadb.start()
        say('creating the schema' + (' with sample rows' if sample else ''))
        from wsgiapp import config, db
        db.initdb(config.from_environ({'DATABASE_URL': self.mariadb.admin_url()}), sample=sample)
        self.uwsgi.start(self.environ())
        self.nginx.start()
        self.wait_ready()

    def wait_ready(self, seconds=30):
        import urllib.error
        import urllib.request
        say(f'waiting for {self.url}/readyz')
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f'{self.url}/readyz', timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                problem = error
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f'{self.url}/readyz did not answer 200 ({problem}).\n'
                    f'--- {self.uwsgi.log}\n{_tail(self.uwsgi.log)}\n'
                    f'--- {self.nginx.error_log}\n{_tail(self.nginx.error_log)}\n'
                    f'--- {self.mariadb.log}\n{_tail(self.mariadb.log)}')
            time.sleep(0.1)

    def down(self):
        self.nginx.stop()
        self.uwsgi.stop()
        self.mariadb.stop()

    def check(self):
        """`python -m wsgiapp check` on this stack, with the environment uwsgi has."""
        import pwd
        nginx_user = 'www-data' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        return subprocess.call(
            [sys.executable, '-m', 'wsgiapp', 'check', '--ini', str(self.uwsgi.ini),
             '--socket', str(self.uwsgi.socket), '--nginx-conf', str(self.nginx.site),
             '--nginx-user', nginx_user], env={**os.environ, **self.environ()})

    def status(self):
        up = True
        for name, pid in [('MariaDB', self.mariadb.pid()), ('uwsgi', self.uwsgi.pid()), ('nginx', self.nginx.pid())]:
            print(f'{name:8} {"up, pid %d" % pid if pid else "down"}')
            up = up and bool(pid)
        return up


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.stack', description='make run / stop / status')
    parser.add_argument('action', choices=['up', 'down', 'status', 'check'])
    parser.add_argument('var', type=Path, help='directory for data, sockets, pid files and logs')
    parser.add_argument('--port', type=int, default=8080)
    args = parser.parse_args(argv)
    from wsgiapp import db
    stack = Stack(args.var, args.port)
    if args.action == 'up':
        try:
            stack.up()
        except (RuntimeError, subprocess.CalledProcessError, db.Unavailable) as error:
            print(f'make run failed: {error}', file=sys.stderr)
            return 1
        say(f'ready: {stack.url}/  (API token for writes: {stack.base / "api-token"}; stop with `make stop`)')
    elif args.action == 'down':
        stack.down()
    elif args.action == 'check':
        return stack.check()
    else:
        return 0 if stack.status() else 3


if __name__ == '__main__':
    sys.exit(main())
