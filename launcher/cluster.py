"""More than one host: an edge nginx in front of app hosts, each running uwsgi from the
shipped conf/uwsgi.ini on its unix socket behind an nginx of its own that terminates the
edge's mutual TLS (conf/nginx/wsgiapp-app.conf), and a database host; `make cluster`,
`make cluster-deploy`, `make cluster-stop`.

Each host is a network namespace on a bridge of the launcher's own (network.py), or, without
root, a loopback address. Under BASE (var/cluster): a directory per host, what it would
hold on a real machine (its data, logs, certificates, the release it runs), and
topology.json, which says what runs where."""
import hashlib
import json
import os
import shutil
from pathlib import Path

from launcher.mariadb import MariaDB
from launcher.network import Network
from launcher.nginx import AppNginx, Nginx
from launcher.process import ROOT, say, secret_file, wait_ready
from launcher.replication import PRIMARY_ARGS, REPLICA_ARGS, REPLICA_GRANTS, allow_replicas, follow
from launcher.single import make_run_dir, remove_run_dir, run_dir_for
from launcher.tls import Authority
from launcher.uwsgi import Uwsgi
from wsgiapp.version import code_version

# On its own host each server takes its usual port; on loopback, ports nobody else uses.
PORTS = {True: {'http': 80, 'https': 443, 'app': 3031, 'db': 3306},
         False: {'http': 18080, 'https': 18443, 'app': 13031, 'db': 13306}}
APP_NAME = 'app.wsgiapp.internal'  # the name on every app host's certificate (wsgiapp-link.conf)
# Passive health (docs/cluster.rst says why): a host is marked failed for 5 s after 3 failed
# attempts (refused, reset, closed without an answer, or no TLS handshake within 1 s) in 5 s.
# A busy host is not a failed one: its nginx accepts and handshakes at once, and requests
# wait in uwsgi's queue; only a host that cannot be reached fails.
SERVER_OPTIONS = 'max_fails=3 fail_timeout=5s'
# What the edge admits in flight to the app hosts (limit_conn in the site; the rest get the
# single host's 503 with Retry-After at once), per app host: far less than one can hold (its
# nginx, 2,000 requests at 2 connections each; uwsgi's listen queue, 4,096), and what its
# uwsgi (2 processes x 4 threads, some 700 uncached reads/s on a shared core) finishes
# within about a third of a second. Not max_conns per server: nginx 1.22 has no queue for
# it, and when every server is at its max_conns the answer is a 502 (no live upstreams).
IN_FLIGHT_PER_APP = 256


def release(base, source=ROOT):
    """The code of `source` as a release directory, BASE/releases/VERSION (wsgiapp/ and conf/),
    named by the hash the app reports (X-App-Version); made once, atomically."""
    version = code_version(source / 'wsgiapp')
    target = base / 'releases' / version
    if not target.exists():
        say(f'making release {version} from {source}')
        building = target.with_name(f'.{version}.{os.getpid()}')
        shutil.rmtree(building, ignore_errors=True)
        for part in ('wsgiapp', 'conf'):
            shutil.copytree(source / part, building / part, ignore=shutil.ignore_patterns('__pycache__'))
        building.rename(target)
    return target


def app_link_files(authority, name, address, directory):
    """An app host's side of the mutual-TLS link, in `directory` under the names conf/uwsgi.ini
    reads (mode 0600): its certificate `name` from `authority` for APP_NAME and `address`
    (the edge checks it), its key, and the CA that signs the edge's client certificate. The
    cluster's app hosts and the benchmark's `mtls` link make them alike."""
    cert, key = authority.issue(name, dns=[APP_NAME], ips=[address])
    directory.mkdir(parents=True, exist_ok=True)
    for source, target in ((cert, 'app.pem'), (key, 'app.key'), (authority.cert, 'ca.pem')):
        shutil.copy(source, directory / target)
        (directory / target).chmod(0o600)


class AppHost:
    """uwsgi on one app host, serving the release it was last started with on its unix
    socket, and the nginx in front of it that the edge's link reaches."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.base = cluster.base / name
        self.address = cluster.network.address(name)
        self.port = PORTS[cluster.network.namespaces]['app']
        self.link_dir = self.base / 'link'
        self.release_file = self.base / 'release'
        # What the host's nginx workers (www-data) must reach: uwsgi's socket (single.py).
        self.run_dir = run_dir_for(self.base)
        self.uwsgi = Uwsgi(self.base, run_dir=self.run_dir, ini=None)  # the release's, at start
        self.nginx = AppNginx(self.base, self.address, self.port, self.uwsgi.socket,
                              link=(self.link_dir / 'app.pem', self.link_dir / 'app.key', self.link_dir / 'ca.pem'),
                              run_dir=self.run_dir, wrap=cluster.network.wrap(name))

    def version(self):
        try:
            return self.release_file.read_text().strip()
        except OSError:
            return None

    def certificate(self):
        """This host's certificate of the link's CA, and the CA that signs the edge's."""
        app_link_files(self.cluster.link, f'{self.name}-{self.address}', self.address, self.link_dir)

    def start(self, release_dir):
        """uwsgi on `release_dir`, then (if it is not running) the host's nginx."""
        self.certificate()
        make_run_dir(self.run_dir)
        self.uwsgi.ini = release_dir / 'conf' / 'uwsgi.ini'
        self.uwsgi.start(self.cluster.app_environ(self), wrap=self.cluster.network.wrap(self.name))
        self.release_file.write_text(release_dir.name + '\n')
        self.nginx.start()

    def stop(self):
        self.nginx.stop()
        self.uwsgi.stop()
        remove_run_dir(self.run_dir)

    def describe(self):
        return {'name': self.name, 'netns': self.cluster.network.netns(self.name), 'address': self.address,
                'port': self.port, 'pidfile': str(self.uwsgi.pidfile), 'nginx_pidfile': str(self.nginx.pidfile),
                'socket': str(self.uwsgi.socket), 'version': self.version()}


class Cluster:
    def __init__(self, base, apps=3, namespaces=None, replicas=1):
        self.base = Path(base).resolve()
        self.topology_file = self.base / 'topology.json'
        saved = self.topology()
        if namespaces is None:
            namespaces = os.geteuid() == 0
        ident = hashlib.sha256(str(self.base).encode()).hexdigest()[:4]
        subnet = saved['network']['subnet'] if saved and saved['network']['subnet'] and namespaces else None
        self.network = Network(ident, namespaces, subnet)
        ports = PORTS[namespaces]
        self.apps = [AppHost(self, f'app{n}') for n in range(1, apps + 1)]
        # Hosts a larger cluster had: stopped and removed by up().
        self.retired = [AppHost(self, app['name']) for app in (saved or {}).get('app', [])[apps:]]
        # The database hosts: db1 the primary, db2... its replicas (replication.py).
        # Database links (docs/cluster.rst): TLS with certificates of a CA of their own; an
        # account per app host, from its address alone (without namespaces every host
        # connects from 127.0.0.1: the accounts are still apart, the addresses are not).
        self.db_ca = Authority(self.base / 'db-ca', 'wsgiapp database CA')
        self.client_host = None if namespaces else '127.0.0.1'
        self.db = self.database_host('db1', PRIMARY_ARGS)
        self.replicas = [self.database_host(f'db{n}', REPLICA_ARGS, REPLICA_GRANTS) for n in range(2, replicas + 2)]
        self.retired_replicas = [self.database_host(host['name'], REPLICA_ARGS, REPLICA_GRANTS)
                                 for host in ((saved or {}).get('db') or {}).get('replicas', [])[replicas:]]
        self.web = Authority(self.base / 'tls', 'wsgiapp cluster web CA')
        self.link = Authority(self.base / 'link-ca', 'wsgiapp link CA')
        self.ca = self.web.cert
        edge = self.base / 'edge'
        self.edge_address = self.network.address('edge')
        self.drained = set()
        self.edge = Nginx(edge, ports['http'], self.upstream(), ports['https'],
                          certificate=(edge / 'tls' / 'fullchain.pem', edge / 'tls' / 'edge.key', self.web.cert),
                          address=self.edge_address, run_dir=run_dir_for(edge),
                          link=(edge / 'link' / 'edge.pem', edge / 'link' / 'edge.key', edge / 'link' / 'ca.pem'),
                          wrap=self.network.wrap('edge'), probers=[self.network.address('bridge')],
                          in_flight=IN_FLIGHT_PER_APP * apps)
        self.url = self.edge.url
        self.tls_port = ports['https']

    def database_host(self, name, args, grants=MariaDB.APP_GRANTS):
        return MariaDB(self.base / name, port=PORTS[self.network.namespaces]['db'], address=self.network.address(name),
                       server_id=int(name[2:]), extra_args=args, wrap=self.network.wrap(name),
                       client_host=self.client_host or '127.0.0.1', app_grants=grants,
                       authority=self.db_ca, accounts=self.db_accounts)

    def db_account(self, app):
        """(user, host, password) of an app host's database account: wsgiapp_appN, from that
        host's address only; the same on the primary and on every replica."""
        secrets_dir = self.base / 'db-accounts'
        secrets_dir.mkdir(parents=True, exist_ok=True)
        secrets_dir.chmod(0o700)
        return (f'wsgiapp_{app.name}', self.client_host or app.address,
                secret_file(secrets_dir / f'{app.name}.password'))

    def db_accounts(self):
        return [self.db_account(app) for app in self.apps]

    # --- what the hosts share ---------------------------------------------------------------
    def topology(self):
        try:
            return json.loads(self.topology_file.read_text())
        except (OSError, ValueError):
            return None

    def token(self):
        return secret_file(self.base / 'api-token')

    def app_environ(self, app):
        """What app host `app`'s EnvironmentFile= holds: the database over TCP (verified TLS,
        its own account), the API token."""
        user, _, password = self.db_account(app)
        ca = self.app_db_ca(app)
        return {'DATABASE_URL': self.db.url(tcp=True, user=user, password=password, ca=ca),
                'WSGIAPP_API_TOKEN': self.token(),
                'DATABASE_REPLICA_URL': ','.join(replica.url(tcp=True, user=user, password=password, ca=ca)
                                                 for replica in self.replicas)}

    def app_db_ca(self, app):
        """The database CA's certificate in the app host's run directory, where uwsgi's
        workers (the app's user, not root) can read it wherever the checkout lives."""
        make_run_dir(app.run_dir)
        copy = app.run_dir / 'db-ca.pem'
        shutil.copyfile(self.db_ca.cert, copy)
        copy.chmod(0o644)
        return copy

    def ssl_context(self):
        """A client context that trusts the web CA (the edge's certificate), and only it."""
        return self.web.client_context()

    def upstream(self):
        return [f'{app.address}:{app.port} {SERVER_OPTIONS}' + (' down' if app.name in self.drained else '')
                for app in self.apps]

    def edge_certificates(self):
        tls, link = self.edge.base / 'tls', self.edge.base / 'link'
        tls.mkdir(parents=True, exist_ok=True)
        link.mkdir(parents=True, exist_ok=True)
        cert, key = self.web.issue(f'edge-{self.edge_address}', dns=['localhost'], ips=[self.edge_address])
        (tls / 'fullchain.pem').write_bytes(cert.read_bytes() + self.web.cert.read_bytes())
        shutil.copy(key, tls / 'edge.key')
        cert, key = self.link.issue('edge-client', client=True)
        for source, name in ((cert, 'edge.pem'), (key, 'edge.key'), (self.link.cert, 'ca.pem')):
            shutil.copy(source, link / name)
        for path in (tls / 'edge.key', link / 'edge.key'):
            path.chmod(0o600)

    # --- up, down, status -------------------------------------------------------------------
    def up(self):
        self.base.mkdir(parents=True, exist_ok=True)
        self.network.create()
        databases = [self.db, *self.replicas]
        for host in [*(Path(server.base).name for server in databases), 'edge', *(app.name for app in self.apps)]:
            self.network.add_host(host)
        for server in databases:
            server.start()
        from wsgiapp import config, schema
        new = not self.db.sql("SHOW TABLES FROM wsgiapp LIKE 'vc_admin'")
        schema.initdb(config.from_environ({'DATABASE_URL': self.db.admin_url()}), sample=new)
        allow_replicas(self.db, [self.client_host or replica.address for replica in self.replicas])
        for replica in self.replicas:
            follow(self.db, replica)
        for replica in self.retired_replicas:
            replica.stop()
            if replica.base.name in self.network.hosts():
                self.network.remove_host(replica.base.name)
        code = release(self.base)
        for app in self.apps:
            if not app.uwsgi.pid():
                app.start(code)  # a host that was down comes back with this checkout's code
            else:
                say(f'{app.name}: uwsgi is already running (pid {app.uwsgi.pid()}, release {app.version()})')
                app.nginx.start()
        for app in self.retired:
            self.stop_app(app)
        self.start_edge()
        self.save()
        self.wait_ready()

    def start_edge(self):
        make_run_dir(self.edge.run_dir)
        self.edge_certificates()
        self.edge.upstream = self.upstream()
        self.edge.start()

    def stop_app(self, app):
        app.stop()
        if app.name in self.network.hosts():
            self.network.remove_host(app.name)

    def describe_database(self, server):
        name = server.base.name
        return {'name': name, 'netns': self.network.netns(name), 'address': server.address,
                'port': server.port, 'socket': str(server.socket), 'pidfile': str(server.pidfile)}

    def save(self):
        topology = {'edge': {'name': 'edge', 'netns': self.network.netns('edge'), 'address': self.edge_address,
                             'url': self.url + '/', 'ca': str(self.ca), 'pidfile': str(self.edge.pidfile)},
                    'app': [app.describe() for app in self.apps],
                    'db': {'primary': self.describe_database(self.db),
                           'replicas': [self.describe_database(replica) for replica in self.replicas]},
                    'network': self.network.describe(),
                    'api_token_file': str(self.base / 'api-token')}
        self.topology_file.write_text(json.dumps(topology, indent=2) + '\n')

    def wait_ready(self, seconds=30):
        """The edge answers /readyz with 200: an app host and the database behind it are up."""
        wait_ready(self.url, self.ssl_context(), [self.edge.error_log, *(app.uwsgi.log for app in self.apps)], seconds)

    def down(self):
        self.edge.stop()
        for app in self.apps + self.retired:
            app.stop()
        for server in [*self.replicas, *self.retired_replicas, self.db]:
            server.stop()
        self.network.remove()
        remove_run_dir(self.edge.run_dir)
        self.topology_file.unlink(missing_ok=True)

    def status(self):
        up = True
        rows = [('edge', 'nginx', self.edge.pid(), self.edge_address),
                *((app.name, 'nginx', app.nginx.pid(), f'{app.address}:{app.port}') for app in self.apps),
                *((app.name, 'uwsgi', app.uwsgi.pid(), f'{app.uwsgi.socket} release {app.version()}')
                  for app in self.apps),
                *((server.base.name, 'MariaDB', server.pid(),
                   f'{server.address}:{server.port} {"replica" if server in self.replicas else "primary"}')
                  for server in [self.db, *self.replicas])]
        for host, server, pid, where in rows:
            print(f'{host:6} {server:8} {"up, pid %d" % pid if pid else "down":16} {where}')
            up = up and bool(pid)
        if up:
            print(f'serving {self.url}/ (certificate authority: {self.ca})')
        return up

    # --- rolling deploy ---------------------------------------------------------------------
    def deploy(self, source=ROOT):
        """The code of `source` onto every app host, one at a time: the host leaves the edge's
        upstream (nginx reloads and its old workers finish what they had in flight), its
        uwsgi stops and starts on the new release, and it rejoins. The others serve meanwhile."""
        code = release(self.base, source)
        for app in self.apps:
            if app.version() == code.name and app.uwsgi.pid():
                say(f'{app.name} already runs release {code.name}')
                continue
            say(f'{app.name}: draining, then release {app.version()} -> {code.name}')
            self.set_drained(app, True)
            app.uwsgi.stop()
            app.start(code)
            self.set_drained(app, False)
        self.save()
        say(f'every app host runs release {code.name}')

    def set_drained(self, app, drained):
        (self.drained.add if drained else self.drained.discard)(app.name)
        self.edge.upstream = self.upstream()
        self.edge.render()
        self.edge.reload()
