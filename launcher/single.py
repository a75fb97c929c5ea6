"""One host: MariaDB, uwsgi and nginx together, what `make run` starts.

Everything lives under one directory (var/ for `make run`): data, logs, secrets, the
generated configs. What nginx's workers must reach (the uwsgi socket, the static files,
nginx's temp files) lives in a run directory they can enter. As root the workers run as
www-data, as in production, and www-data cannot enter a checkout under /root or a
`mktemp -d` directory (mode 0700); so as root the run directory is
/run/wsgiapp-stack/ID (0750, group www-data), like the /run/wsgiapp of production. As
another user the workers run as that user, and the run directory is VAR/run."""
import grp
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from launcher.mariadb import MariaDB
from launcher.nginx import Nginx
from launcher.process import free_port, pid_alive, say, secret_file, wait_ready
from launcher.tls import Authority
from launcher.uwsgi import Uwsgi, app_ids

SYSTEM_RUN = Path('/run/wsgiapp-stack')
NGINX_GROUP = 'www-data'


def run_dir_for(base):
    if os.geteuid() != 0:
        return base / 'run'
    return SYSTEM_RUN / hashlib.sha256(str(base).encode()).hexdigest()[:12]


def make_run_dir(path):
    """The run directory, enterable by nginx's workers and nobody else; as root, owned by
    the user uwsgi drops to (app_user), which keeps its socket, pid and stats files there."""
    if path.parent == SYSTEM_RUN:
        SYSTEM_RUN.mkdir(mode=0o755, exist_ok=True)
        path.mkdir(mode=0o750, exist_ok=True)
        os.chown(path, app_ids()[0], grp.getgrnam(NGINX_GROUP).gr_gid)
        path.chmod(0o750)
    else:
        path.mkdir(parents=True, exist_ok=True)


def remove_run_dir(path):
    """The run directory goes with the stack, wherever it was (make stop leaves no socket)."""
    shutil.rmtree(path, ignore_errors=True)
    if path.parent == SYSTEM_RUN:
        try:
            SYSTEM_RUN.rmdir()
        except OSError:
            pass  # another stack still runs


class Stack:
    def __init__(self, base, port=8080, tls_port=None, metrics_port=None):
        self.base = Path(base).resolve()
        self.run_dir = run_dir_for(self.base)
        self.port = port
        self.tls_port = tls_port or free_port()
        # The app's metrics (wsgiapp/exporter.py), on loopback only.
        self.metrics_url = f'http://127.0.0.1:{metrics_port or free_port()}/metrics'
        self.mariadb = MariaDB(self.base)
        if os.geteuid() == 0 and not pid_alive(self.mariadb.pidfile):
            # uwsgi drops root (conf/uwsgi.ini's uid) and may not enter BASE (a checkout under
            # /root, a `mktemp -d`): MariaDB's socket goes in the run directory, as uwsgi's does
            # for nginx, in a directory of its own that only uwsgi's group may enter (mariadb.py).
            # (A MariaDB started before, with its socket under BASE, keeps it until stopped.)
            self.mariadb.run_dir = self.run_dir / 'mariadb'
            self.mariadb.socket = self.mariadb.run_dir / 'mysqld.sock'
            self.mariadb.pidfile = self.mariadb.run_dir / 'mysqld.pid'
        self.uwsgi = Uwsgi(self.base, run_dir=self.run_dir)
        self.tls_dir = self.base / 'tls'
        self.nginx = Nginx(self.base, port, self.uwsgi.socket, self.tls_port,
                           certificate=(self.tls_dir / 'fullchain.pem', self.tls_dir / 'localhost.key',
                                        self.tls_dir / 'ca.pem'),
                           run_dir=self.run_dir)
        self.url = self.nginx.url
        self.http_url = self.nginx.http_url
        self.authority = Authority(self.tls_dir)
        self.ca = self.authority.cert

    def token(self):
        return secret_file(self.base / 'api-token')

    def environ(self):
        """What systemd's EnvironmentFile= holds in production."""
        return {'DATABASE_URL': self.mariadb.url(), 'WSGIAPP_API_TOKEN': self.token(),
                'WSGIAPP_METRICS_LISTEN': self.metrics_url.split('/')[2]}

    def ssl_context(self):
        """A client context that trusts this stack's certificate authority, and only it."""
        return self.authority.client_context()

    def certificate(self):
        """A certificate for 127.0.0.1 and localhost, signed by a CA of this directory."""
        cert, _ = self.authority.issue('localhost', dns=['localhost'], ips=['127.0.0.1', '::1'])
        fullchain = self.tls_dir / 'fullchain.pem'
        if not fullchain.exists():
            fullchain.write_bytes(cert.read_bytes() + self.ca.read_bytes())

    def up(self, sample=True):
        self.base.mkdir(parents=True, exist_ok=True)
        make_run_dir(self.run_dir)
        self.certificate()
        self.mariadb.start()
        from wsgiapp import config, schema
        # Sample rows go into a new table only: rows a user deleted stay deleted.
        new = not self.mariadb.sql("SHOW TABLES FROM wsgiapp LIKE 'vc_admin'")
        say('creating the schema with sample rows' if new and sample else 'the schema is in place')
        schema.initdb(config.from_environ({'DATABASE_URL': self.mariadb.admin_url()}), sample=sample and new)
        self.uwsgi.start(self.environ())
        self.nginx.start()
        self.wait_ready()

    def wait_ready(self, seconds=30):
        wait_ready(self.url, self.ssl_context(), [self.uwsgi.log, self.nginx.error_log, self.mariadb.log], seconds)

    def down(self):
        self.nginx.stop()
        self.uwsgi.stop()
        self.mariadb.stop()
        remove_run_dir(self.run_dir)

    def check(self):
        """`python -m wsgiapp check` on this stack, with the environment uwsgi has."""
        import pwd
        nginx_user = NGINX_GROUP if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        return subprocess.call(
            [sys.executable, '-m', 'wsgiapp', 'check', '--ini', str(self.uwsgi.ini),
             '--socket', str(self.uwsgi.socket), '--nginx-conf', str(self.nginx.site),
             '--nginx-user', nginx_user, '--pidfile', str(self.uwsgi.pidfile), '--env-file', '',
             '--nginx-sites-enabled', str(self.base / 'no-other-sites'), '--private-stack'],
            env={**os.environ, **self.environ()})

    def status(self):
        up = True
        for name, pid in [('MariaDB', self.mariadb.pid()), ('uwsgi', self.uwsgi.pid()), ('nginx', self.nginx.pid())]:
            print(f'{name:8} {"up, pid %d" % pid if pid else "down"}')
            up = up and bool(pid)
        if up:
            # The ports nginx really listens on: those of its running config, whatever was asked now.
            ports = re.findall(r'listen [^:]+:(\d+)( ssl)?', self.nginx.site.read_text())
            http = next(port for port, tls in ports if not tls)
            https = next(port for port, tls in ports if tls)
            print(f'serving https://127.0.0.1:{https}/ (and http://127.0.0.1:{http}/, which redirects to it)')
        return up
