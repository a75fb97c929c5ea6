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
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
APP_USER = 'wsgiapp'
APP_DATABASE = 'wsgiapp'


def say(message):
    print(f'==> {message}', flush=True)


def _pid_alive(pidfile):
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:  # a zombie is not alive
        if Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z':
            return None
    except OSError:
        return None
    return pid


def _wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z':
                os.waitpid(pid, os.WNOHANG)
                return True
        except (OSError, ChildProcessError):
            return True
        time.sleep(0.05)
    return False


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
        self.socket = self.base / 'mariadb.sock'
        self.pidfile = self.base / 'mariadb.pid'
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
            return
        self.base.mkdir(parents=True, exist_ok=True)
        as_root = ['--user=root'] if os.geteuid() == 0 else []
        if not (self.datadir / 'mysql').is_dir():
            say(f'creating a private MariaDB data directory in {self.datadir}')
            subprocess.run(
                ['mariadb-install-db', '--no-defaults', f'--datadir={self.datadir}',
                 '--auth-root-authentication-method=normal', '--skip-test-db', *as_root],
                check=True, stdout=subprocess.DEVNULL, stderr=open(self.log, 'ab'))
        network = ([f'--port={self.port}', '--bind-address=127.0.0.1'] if self.port
                   else ['--skip-networking'])
        say(f'starting MariaDB on {self.socket}' + (f' and 127.0.0.1:{self.port}' if self.port else ''))
        subprocess.Popen(
            ['mariadbd', '--no-defaults', f'--datadir={self.datadir}', f'--socket={self.socket}',
             f'--pid-file={self.pidfile}', f'--log-error={self.log}', *network, *as_root,
             '--character-set-server=utf8mb4', '--collation-server=utf8mb4_bin',
             '--innodb-buffer-pool-size=256M', '--max-connections=1000', '--skip-name-resolve'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._wait_ready()
        self._create_app_user()

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
            say(f'stopping MariaDB (pid {pid})')
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 60):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        for leftover in (self.socket, self.pidfile):
            leftover.unlink(missing_ok=True)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.stack')
    parser.add_argument('action', choices=['up', 'down', 'status'])
    parser.add_argument('var', type=Path)
    parser.add_argument('--port', type=int, default=8080)
    args = parser.parse_args(argv)
    database = MariaDB(args.var)
    if args.action == 'up':
        database.start()
    elif args.action == 'down':
        database.stop()
    else:
        print(f'MariaDB: {"up, pid %d" % database.pid() if database.pid() else "down"}')


if __name__ == '__main__':
    sys.exit(main())
