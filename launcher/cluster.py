"""More than one host: an edge nginx in front of app hosts, each running uwsgi from the
shipped conf/uwsgi.ini in its cluster form (the uwsgi protocol over mutual TLS), and a
database host; `make cluster`, `make cluster-deploy`, `make cluster-stop`.

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
from launcher.nginx import Nginx
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
# Passive health (conf/nginx/wsgiapp.conf says why).
SERVER_OPTIONS = 'max_fails=1 fail_timeout=5s'


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
    """uwsgi on one app host, serving the release it was last started with."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.base = cluster.base / name
        self.address = cluster.network.address(name)
        self.port = PORTS[cluster.network.namespaces]['app']
        self.link_dir = self.base / 'link'
        self.release_file = self.base / 'release'
        self.uwsgi = Uwsgi(self.base, run_dir=self.base / 'run', ini=None)  # the release's, at start

    def version(self):
        try:
            return self.release_file.read_text().strip()
        except OSError:
            return None

    def certificate(self):
        """This host's certificate of the link's CA, and the CA that signs the edge's."""
        app_link_files(self.cluster.link, f'{self.name}-{self.address}', self.address, self.link_dir)

    def start(self, release_dir):
        self.certificate()
        self.uwsgi.ini = release_dir / 'conf' / 'uwsgi.ini'
        self.uwsgi.start({**self.cluster.app_environ(), 'WSGIAPP_LINK': f'{self.address}:{self.port}',
                          'WSGIAPP_LINK_DIR': str(self.link_dir)},
                         wrap=self.cluster.network.wrap(self.name))
        self.release_file.write_text(release_dir.name + '\n')

    def describe(self):
        return {'name': self.name, 'netns': self.cluster.network.netns(self.name), 'address': self.address,
                'port': self.port, 'pidfile': str(self.uwsgi.pidfile), 'version': self.version()}


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
        self.client_host = str(self.network.subnet).replace('.0/24', '.%') if namespaces else '127.0.0.1'
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
                          wrap=self.network.wrap('edge'))
        self.url = self.edge.url
        self.tls_port = ports['https']

    def database_host(self, name, args, grants=MariaDB.APP_GRANTS):
        return MariaDB(self.base / name, port=PORTS[self.network.namespaces]['db'], address=self.network.address(name),
                       server_id=int(name[2:]), extra_args=args, wrap=self.network.wrap(name),
                       client_host=self.client_host, app_grants=grants)

    # --- what the hosts share ---------------------------------------------------------------
    def topology(self):
        try:
            return json.loads(self.topology_file.read_text())
        except (OSError, ValueError):
            return None

    def token(self):
        return secret_file(self.base / 'api-token')

    def app_environ(self):
        """What each app host's EnvironmentFile= holds: the database over TCP, the API token."""
        return {'DATABASE_URL': self.db.url(tcp=True), 'WSGIAPP_API_TOKEN': self.token(),
                'DATABASE_REPLICA_URL': ','.join(replica.url(tcp=True) for replica in self.replicas)}

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
        allow_replicas(self.db, self.client_host)
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
        app.uwsgi.stop()
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
            app.uwsgi.stop()
        for server in [*self.replicas, *self.retired_replicas, self.db]:
            server.stop()
        self.network.remove()
        remove_run_dir(self.edge.run_dir)
        self.topology_file.unlink(missing_ok=True)

    def status(self):
        up = True
        rows = [('edge', 'nginx', self.edge.pid(), self.edge_address),
                *((app.name, 'uwsgi', app.uwsgi.pid(), f'{app.address}:{app.port} release {app.version()}')
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
