"""A MariaDB server of the launcher's own: its data, socket, pid file and log under one
directory, never the system's server, never port 3306.

Its administrator is reachable over its unix socket only (authenticated by the socket's
peer: the OS user who started it); over TCP only the application's user exists, with a
generated password and rights on the application's database alone."""
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from launcher.process import binary, pid_alive, say, secret_file, tails, terminate
from launcher.wait import wait_for

APP_USER = 'wsgiapp'
APP_DATABASE = 'wsgiapp'


# The launcher's accounts and database are each server's own, never replicated: a replica
# has its own users, and a statement it replayed from the primary would collide with them.
LOCAL_ONLY = 'SET SESSION sql_log_bin = 0'


def run_sql(connect_kwargs, *statements):
    """Run statements (a string, or (sql, args)) on one connection of their own, closed
    whatever happens; the last one's rows. The one admin SQL helper of the launcher, the
    benchmark and the tests."""
    import MySQLdb
    con = MySQLdb.connect(**connect_kwargs)
    try:
        cursor = con.cursor()
        for statement in statements:
            if isinstance(statement, tuple):
                cursor.execute(*statement)
            else:
                cursor.execute(statement)
        return cursor.fetchall()
    finally:
        con.close()


class MariaDB:
    """A mariadbd: unix socket only, or also TCP on `address:port` when a port is given."""

    APP_GRANTS = (f'SELECT, INSERT, UPDATE, DELETE ON {APP_DATABASE}.*',)

    def __init__(self, base, port=None, address='127.0.0.1', server_id=1, extra_args=(),
                 client_host=None, app_grants=APP_GRANTS, authority=None, tls_required=True):
        self.base = Path(base).resolve()
        self.datadir = self.base / 'mariadb'
        # Socket and pid file in a directory only we can enter.
        self.run_dir = self.base / 'mariadb-run'
        self.socket = self.run_dir / 'mysqld.sock'
        self.pidfile = self.run_dir / 'mysqld.pid'
        # LOAD DATA / SELECT ... INTO OUTFILE may touch this directory and nothing else.
        self.files_dir = self.base / 'mariadb-files'
        self.log = self.base / 'mariadb.log'
        self.port = port
        self.address = address
        self.server_id = server_id
        self.extra_args = list(extra_args)
        # Where the application user may connect from over TCP (a MariaDB host pattern).
        self.client_host = client_host or ('127.0.0.1' if address.startswith('127.') else '%')
        self.app_grants = app_grants  # a replica's user only reads, and may see its replication state
        # With an Authority (launcher/tls.py): TCP only over TLS (require_secure_transport),
        # with a certificate of that CA for this host's name and address; the unix socket
        # counts as secure and stays as it is. tls_required=False: TLS offered, clear text
        # still accepted (make bench's database-link phase, which measures both on one server).
        self.authority = authority
        self.tls_required = tls_required
        self.tls_dir = self.base / 'tls'

    # The administrator is the OS user who runs the server (MariaDB's unix_socket auth):
    # root when we are root, else our own login name.
    admin_user = 'root' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def pid(self):
        return pid_alive(self.pidfile)

    def password(self):
        # URL-hostile characters on purpose: DATABASE_URL must percent-encode them.
        return secret_file(self.base / 'db-password', lambda: secrets.token_urlsafe(18) + '@:/%#[]?')

    def admin_kwargs(self):
        return {'unix_socket': str(self.socket), 'user': self.admin_user, 'charset': 'utf8mb4',
                'autocommit': True}

    def url(self, tcp=False, user=APP_USER, password=None, ca=None, tls=True):
        """DATABASE_URL of the application user (only SELECT, INSERT, UPDATE, DELETE); over
        TCP to a server with TLS, verified: its CA (or the copy `ca` of it), and the name is
        checked (VERIFY_IDENTITY); tls=False: in clear text, which only a server whose TLS
        is not required accepts."""
        credentials = f'{quote(user, safe="")}:{quote(password or self.password(), safe="")}'
        if tcp:
            query = (f'?ssl-ca={quote(str(ca or self.authority.cert))}&ssl-mode=VERIFY_IDENTITY'
                     if self.authority and tls else '')
            return f'mysql://{credentials}@{self.address}:{self.port}/{APP_DATABASE}{query}'
        return f'mysql://{credentials}@localhost/{APP_DATABASE}?unix_socket={self.socket}'

    def admin_url(self):
        return f'mysql://{quote(self.admin_user, safe="")}@localhost/{APP_DATABASE}?unix_socket={self.socket}'

    def start(self):
        if self.pid():
            say(f'MariaDB is already running (pid {self.pid()}, socket {self.socket})')
        else:
            self._start()
        self._wait_ready()
        self._secure()
        self._create_app_user()

    def certificate(self):
        """This server's certificate, key and CA in tls/ (mode 0600), from its Authority: for
        its host name (db1...) and its address, the names a client checks."""
        cert, key = self.authority.issue(f'{self.base.name}-{self.address}', dns=[self.base.name],
                                         ips=[self.address])
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.tls_dir.chmod(0o700)
        for source, target in ((cert, 'server.pem'), (key, 'server.key'), (self.authority.cert, 'ca.pem')):
            shutil.copy(source, self.tls_dir / target)
            (self.tls_dir / target).chmod(0o600)

    def tls_args(self):
        if not (self.authority and self.port):
            return []
        return [f'--ssl-cert={self.tls_dir / "server.pem"}', f'--ssl-key={self.tls_dir / "server.key"}',
                f'--ssl-ca={self.tls_dir / "ca.pem"}', '--tls-version=TLSv1.2,TLSv1.3',
                # A client that does not start TLS is refused before it may log in.
                f'--require-secure-transport={"ON" if self.tls_required else "OFF"}']

    def command(self):
        """mariadbd's command line (the cluster runs it inside a network namespace)."""
        as_root = ['--user=root'] if os.geteuid() == 0 else []
        network = ([f'--port={self.port}', f'--bind-address={self.address}', *self.tls_args()] if self.port
                   else ['--skip-networking'])
        return [
            binary('mariadbd'), '--no-defaults', f'--datadir={self.datadir}', f'--socket={self.socket}',
            f'--pid-file={self.pidfile}', f'--log-error={self.log}', *network, *as_root,
            f'--secure-file-priv={self.files_dir}', f'--server-id={self.server_id}',
            '--character-set-server=utf8mb4', '--collation-server=utf8mb4_bin',
            '--innodb-buffer-pool-size=256M', '--max-connections=1000', '--skip-name-resolve',
            # Said aloud because tests/faults relies on it: a commit is on disk before the
            # app acknowledges it, so a SIGKILLed mariadbd loses no acknowledged write.
            '--innodb-flush-log-at-trx-commit=1', *self.extra_args]

    def initialize(self):
        if (self.datadir / 'mysql').is_dir():
            return
        say(f'creating a private MariaDB data directory in {self.datadir}')
        as_root = ['--user=root'] if os.geteuid() == 0 else []
        subprocess.run(
            [binary('mariadb-install-db'), '--no-defaults', f'--datadir={self.datadir}',
             '--auth-root-authentication-method=socket', f'--auth-root-socket-user={self.admin_user}',
             '--skip-test-db', *as_root],
            check=True, stdout=subprocess.DEVNULL, stderr=open(self.log, 'ab'))

    def _start(self):
        for directory in (self.run_dir, self.files_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        if os.geteuid() == 0:
            # uwsgi drops root (conf/uwsgi.ini's uid): its group may reach the socket, no more.
            from launcher.uwsgi import app_ids
            os.chown(self.run_dir, -1, app_ids()[1])
            self.run_dir.chmod(0o710)
        self.initialize()
        if self.authority and self.port:
            self.certificate()
        say(f'starting MariaDB on {self.socket}' + (f' and {self.address}:{self.port}' if self.port else ''))
        subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def _wait_ready(self, seconds=60):
        """Until the administrator can connect over the socket; else TimedOut (a RuntimeError)
        with the last refusal and the server's log tail."""
        wait_for(lambda: run_sql({**self.admin_kwargs(), 'connect_timeout': 2}, 'SELECT 1'), seconds,
                 'MariaDB did not start', interval=0.1, detail=lambda: tails(self.log))

    def sql(self, *statements, database=None):
        """Run statements as the administrator; the last one's rows."""
        return run_sql(dict(self.admin_kwargs(), **({'database': database} if database else {})), *statements)

    def _secure(self):
        """No administrator or anonymous account reachable over TCP, whatever made the data
        directory (older versions of this launcher created a password-less root@127.0.0.1)."""
        rows = self.sql(("SELECT user, host FROM mysql.user WHERE user = '' OR "
                         "(user IN ('root', 'mysql', %s) AND host <> 'localhost')", (self.admin_user,)))
        for user, host in rows:
            self.sql(LOCAL_ONLY, ('DROP USER %s@%s', (user, host)))

    def app_accounts(self):
        """[(user, host, password)]: the application's accounts on this server."""
        return [(APP_USER, host, self.password()) for host in ('localhost', self.client_host)]

    def _create_app_user(self):
        """The application's accounts, and no other: one of an earlier layout (e.g. wsgiapp@'10.1.2.%',
        any host of a subnet, or the account of an app host that is gone) is dropped."""
        wanted = self.app_accounts()
        statements = [LOCAL_ONLY, f'CREATE DATABASE IF NOT EXISTS {APP_DATABASE} CHARACTER SET utf8mb4']
        existing = self.sql(("SELECT user, host FROM mysql.user WHERE user = %s OR user LIKE %s",
                             (APP_USER, APP_USER + r'\_%')))
        keep = {(user, host) for user, host, _ in wanted}
        statements += [('DROP USER %s@%s', account) for account in existing if tuple(account) not in keep]
        for user, host, password in wanted:
            statements.append(('CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s', (user, host, password)))
            # The password of the file, whatever the account had (a host's file may be new).
            # Over TCP with TLS only, if ever require_secure_transport were turned off.
            require = ' REQUIRE SSL' if self.authority and self.tls_required and host != 'localhost' else ''
            statements.append((f'ALTER USER %s@%s IDENTIFIED BY %s{require}', (user, host, password)))
            statements += [(f'GRANT {grant} TO %s@%s', (user, host)) for grant in self.app_grants]
        self.sql(*statements)

    def stop(self):
        pid = self.pid()
        if pid:
            terminate('MariaDB', pid, signal.SIGTERM, 60, signal.SIGKILL)
        for leftover in (self.socket, self.pidfile):
            leftover.unlink(missing_ok=True)
