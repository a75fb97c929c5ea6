"""make bench: wsgiapp against its peers, through the same nginx and uwsgi, in one run.

    python -m bench.run [--smoke] [--rounds N] [--seconds S] [--out DIR]

Every peer is served at once, each by uwsgi with conf/uwsgi.ini's settings (only `module`
differs) behind nginx with conf/nginx/wsgiapp.conf, all reaching MariaDB the way the
seed's app does: over TCP, with a user and a password. wrk drives each route on one peer
after another, in the opposite order every other round; the rounds are repeated and
medians kept, because this machine drifts.

The link phase serves wsgiapp once per link between nginx and uwsgi (LINKS), each round
over all three, and counts what the link costs uwsgi and nginx per request.

The replica phase starts a MariaDB primary and a replica following it (as `make cluster`
and tests/test_replicas.py do), and serves wsgiapp over it twice: reading on the primary
(DATABASE_URL only), then on the replica (DATABASE_REPLICA_URL too); it counts each
mariadbd's CPU and SELECTs per request, and checks that the reads went where they should.

The metrics phase serves wsgiapp with its metrics off (WSGIAPP_METRICS_DIR empty) and on
(as shipped, scraped every 5 s as `make monitor` does), both at once, measured in turns,
and counts what they cost uwsgi and nginx per request on `/` and `/api/admins`; then what
the metrics' code alone costs, in one process with no server around the app
(bench/inprocess.py), where the machine's drift is smaller than that cost.

The database-link phase (bench/dblink.py) serves wsgiapp over one MariaDB in clear text and
over TLS, both at once, measured in turns, and counts what TLS costs per request.

The scale-out phase (bench/scaleout.py) serves wsgiapp as `make run` does and through the
cluster's edge with 1, 2 and 3 app hosts, and counts every process's CPU per request.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import dblink, scaleout
from launcher import procs
from launcher.mariadb import MariaDB
from launcher.nginx import AppNginx, Nginx
from launcher.process import ROOT, free_port, say
from launcher.replication import caught_up, local_pair
from launcher.single import make_run_dir, remove_run_dir, run_dir_for
from launcher.tls import Authority
from launcher.uwsgi import Uwsgi
from launcher.wait import TimedOut, wait_for

PEERS = {  # name -> WSGI module
    'ceiling': 'bench.peers.ceiling:application',
    'ceiling-headers': 'bench.peers.ceiling_headers:application',
    'ceiling-db': 'bench.peers.ceiling_db:application',
    'seed': 'bench.peers.seed:application',
    'flask': 'bench.peers.flask_app:application',
    'falcon': 'bench.peers.falcon_app:application',
    'falcon-headers': 'bench.peers.falcon_headers:application',
    'wsgiapp': 'wsgiapp.app:application',
}
FRAMEWORKS = ('flask', 'falcon', 'falcon-headers')
ROUTES = {  # label -> (path, which peers have it)
    '/': ('/', ('ceiling', 'ceiling-headers', *FRAMEWORKS, 'wsgiapp')),
    '/{name}': ('/' + '%E5%BC%A0%E4%B8%89', (*FRAMEWORKS, 'wsgiapp')),
    '/admins': ('/admins', (*FRAMEWORKS, 'wsgiapp')),
    '/api/admins': ('/api/admins', ('ceiling-db', 'seed', *FRAMEWORKS, 'wsgiapp')),
    '/api/admins/{id}': ('/api/admins/500', (*FRAMEWORKS, 'wsgiapp')),
    'POST /api/admins': ('/api/admins', (*FRAMEWORKS, 'wsgiapp')),
}
SMALL, LARGE = 1_000, 1_000_000
STATUS_LUA = ROOT / 'bench' / 'status.lua'
OVERLOAD = (32, 256, 1000)  # connections, for uncached reads
# The peers are compared as apps, each request reaching uwsgi: a consistency token makes a
# request private to nginx, so it passes the cache (and its lock) by. `edge` measures the cache.
PAST_THE_CACHE = ('X-Consistency-Token: bench',)
# The link between nginx and uwsgi, for the same app and site: `unix` as one host serves it
# (the peers above); `mtls` as the cluster's edge reaches an app host (HTTP/1.1 over mutual
# TLS on kept-alive connections, conf/nginx/wsgiapp-link.conf, to an nginx of the app host's
# own, conf/nginx/wsgiapp-app.conf, which passes to uwsgi's unix socket; both nginx's CPU is
# counted); `tcp`, the plain uwsgi protocol on a TCP port, only as the reference for what a
# network link costs: it is unauthenticated, and never a way to ship the app.
LINKS = ('unix', 'mtls', 'tcp')
# As the edge role lists an app host, and the name on each app host's link certificate
# (deploy/roles/edge, deploy/roles/app; the edge's proxy_ssl_name).
SERVER_OPTIONS = 'max_fails=3 fail_timeout=5s'
APP_NAME = 'app.wsgiapp.internal'
LINK_ROUTES = ('/', '/api/admins')
UNIX_SOCKET = 'socket = %(run_dir)/uwsgi.sock\n'
# Reads on a replica: the same app and settings, reading on the primary alone (`primary`:
# DATABASE_URL only) or on a replica following it (`replica`: DATABASE_REPLICA_URL too).
REPLICA_CASES = ('primary', 'replica')
REPLICA_ROUTE = '/api/admins'
# PAST_THE_CACHE cannot serve here: to the app a consistency token steers reads, and a
# malformed one ('bench') sends them to the primary. A bearer token is private to nginx as
# well ($wsgiapp_private in conf/nginx/wsgiapp.conf), and the app ignores it on a GET.
PAST_THE_CACHE_ANY_SERVER = ('Authorization: Bearer x',)
# Metrics off and on, for the same app and site (docs/metrics.rst), on the cheapest route and
# the database one.
# One hash seed for all, so that they differ in metrics only. 'off again' is 'off' once more,
# measured as 'on' is: its ratio to 'off', 1 for a method with no error, is the method's error
# in the same run (two identical stacks read 4.7% apart on `/` over 12 turns: docs/metrics.rst).
METRICS_OFF = {'WSGIAPP_METRICS_DIR': '', 'PYTHONHASHSEED': '0'}
METRICS_CASES = {'off': METRICS_OFF, 'off again': METRICS_OFF, 'on': {'PYTHONHASHSEED': '0'}}
METRICS_ROUTES = ('/', '/api/admins')
METRICS_LIMITS = {'/': 1.05, '/api/admins': 1.03}  # CPU per request, on against off
SCRAPE_EVERY = 5  # seconds, as make monitor's Prometheus
# What each mariadbd counts: the app's reads (SELECT) and the per-process replica checks of
# its monitor (SHOW SLAVE STATUS, once a second; each check also sends the primary SELECT 1).
DB_COUNTERS = ('Com_select', 'Com_show_slave_status')


def db_counters(server):
    """DB_COUNTERS of one MariaDB, as numbers."""
    names = ', '.join(f"'{name}'" for name in DB_COUNTERS)
    return {name: int(value) for name, value in server.sql(f'SHOW GLOBAL STATUS WHERE Variable_name IN ({names})')}


def master_cpu_seconds(server):
    """User + system CPU of a server's master (uwsgi's, nginx's) and its workers, including
    those it has already reaped; with the servers in its `also` (the `mtls` link's app-host nginx)."""
    return sum(procs.cpu_seconds(each.pid(), with_children=True) for each in [server, *getattr(server, 'also', ())])


def _ms(value, unit):
    return float(value) * {'us': 0.001, 'ms': 1.0, 's': 1000.0, 'm': 60000.0}[unit]


def wrk(url, seconds, script=None, args=(), connections=32, headers=()):
    command = ['wrk', '-t2', f'-c{connections}', f'-d{seconds}s', '--latency', '--timeout', '10s']
    if script:
        command += ['-s', str(script)]
    for header in headers:
        command += ['-H', header]
    command += [url]
    if args:
        command += ['--', *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = {p: _ms(v, u) for p, v, u in re.findall(r'^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$', out, re.M)}
    if len(found) != 2:
        raise RuntimeError(f'wrk printed no latency distribution:\n{out}')
    errors = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out)
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    statuses = re.search(r'2xx=(\d+) 502=(\d+) 503=(\d+) other=(\d+)', out)  # from status.lua
    return {
        **({key: int(n) for key, n in zip(('2xx', '502', '503', 'other'), statuses.groups())} if statuses else {}),
        'requests': int(re.search(r'(\d+) requests in', out).group(1)),
        'rps': float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1)),
        'p50_ms': found['50'], 'p99_ms': found['99'],
        'errors': (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


class Bench:
    def __init__(self, base, seconds, rounds, peers=tuple(PEERS)):
        self.peers = peers
        self.base = base
        self.seconds = seconds
        # 1,000 new TLS connections take more than the smoke mode's one second to open on
        # two busy cores: overload runs get at least 3 s, or a smoke run may count nothing.
        self.overload_seconds = max(seconds, 3)
        self.rounds = rounds
        self.mariadb = MariaDB(base / 'db', port=free_port())
        self.token = uuid.uuid4().hex
        self.ini = base / 'uwsgi.ini'
        self.authority = Authority(base / 'tls')
        self.link_ca = Authority(base / 'link-ca', 'wsgiapp link CA')  # as the cluster's: not the web's
        self.run_dirs = []

    def sql(self, *statements, server=None):
        """Run statements as the admin (of `server`, the bench's MariaDB by default); the last one's rows."""
        return (server or self.mariadb).sql(*statements, database='wsgiapp')

    def fill(self, rows, server=None):
        """vc_admin with exactly `rows` rows, ids 1..rows (MariaDB's sequence engine makes them fast)."""
        say(f'filling vc_admin with {rows:,} rows')
        self.sql('TRUNCATE TABLE vc_admin',
                 f"INSERT INTO vc_admin (name, email) SELECT CONCAT('user', seq), CONCAT('user', seq, '@example.com') "
                 f'FROM seq_1_to_{rows}',
                 'ANALYZE TABLE vc_admin', server=server)
        self.settle(server=server)

    def settle(self, seconds=120, server=None):
        """Wait until InnoDB has written the new rows out. Otherwise its background flushing
        of a million fresh rows runs during the measurements and is counted as query cost."""
        self.sql('SET GLOBAL innodb_max_dirty_pages_pct = 0', server=server)
        try:
            wait_for(lambda: int(self.sql("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'",
                                          server=server)[0][1]) == 0,
                     seconds, 'InnoDB did not write its dirty pages out', interval=0.2)
        except TimedOut as error:
            say(f'{error}; measuring anyway')
        finally:
            self.sql('SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT', server=server)

    def link_files(self, directory):
        """The mutual-TLS link's files, as the playbook makes them (deploy/roles/pki): the app
        host's certificate for APP_NAME and its address, its key and the CA that signs the
        edge's, in `directory` under the names launcher/nginx.py's AppNginx reads (mode 0600);
        and the edge's client certificate, key and the link's CA, for Nginx's `link`."""
        cert, key = self.link_ca.issue('app', dns=[APP_NAME], ips=['127.0.0.1'])
        directory.mkdir(parents=True, exist_ok=True)
        for source, target in ((cert, 'app.pem'), (key, 'app.key'), (self.link_ca.cert, 'ca.pem')):
            shutil.copy(source, directory / target)
            (directory / target).chmod(0o600)
        return (*self.link_ca.issue('edge-client', client=True), self.link_ca.cert)

    @contextmanager
    def serve(self, peer, link='unix', databases=None, name=None, environ=None):
        """with serve(...) as (uwsgi, nginx): uwsgi with conf/uwsgi.ini's settings and this
        peer's module, nginx in front, joined by `link` (LINKS); reading on the bench's MariaDB,
        or as `databases` says (DATABASE_URL, DATABASE_REPLICA_URL); its files under `name`.
        Both are stopped when the block ends, whatever happened."""
        ini = (ROOT / 'conf' / 'uwsgi.ini').read_text()
        ini = ini.replace('module = wsgiapp.app:application', f'module = {PEERS[peer]}')
        ini = ini.replace('chdir = %d..', f'chdir = {ROOT}')
        directory = self.base / (name or (peer if link == 'unix' else f'{peer}-{link}'))
        # No replica unless asked for, even when the caller's own environment names one.
        databases = databases or {'DATABASE_URL': self.mariadb.url(tcp=True)}
        environ = {'DATABASE_REPLICA_URL': '', **databases, 'WSGIAPP_API_TOKEN': self.token,
                   'WSGIAPP_METRICS_LISTEN': f'127.0.0.1:{free_port()}', **(environ or {})}
        upstream, edge = None, None  # None: uwsgi's unix socket
        if link in ('mtls', 'tcp'):
            address = f'127.0.0.1:{free_port()}'
            upstream = [f'{address} {SERVER_OPTIONS}']  # as the edge role lists an app host
        if link == 'mtls':  # the cluster's: an app host's nginx in front of uwsgi's unix socket
            edge = self.link_files(directory / 'link')
        elif link == 'tcp':  # the reference only: the ini has no switch for it, on purpose
            if UNIX_SOCKET not in ini:
                raise RuntimeError(f'conf/uwsgi.ini no longer contains {UNIX_SOCKET!r}')
            ini = ini.replace(UNIX_SOCKET, f'socket = {address}\n')
        elif link != 'unix':
            raise ValueError(f'no link {link!r}')
        self.ini.write_text(ini)
        run_dir = run_dir_for(directory)  # where nginx's workers can reach the socket
        make_run_dir(run_dir)
        self.run_dirs.append(run_dir)
        uwsgi = Uwsgi(directory, run_dir=run_dir, ini=self.ini)
        cert, key = self.authority.issue('localhost', ips=['127.0.0.1'])
        nginx = Nginx(directory, free_port(), upstream or uwsgi.socket, free_port(), (cert, key, self.authority.cert),
                      run_dir=run_dir, link=edge)
        nginx.also = []
        if link == 'mtls':
            host, port = address.rsplit(':', 1)
            link_dir = directory / 'link'
            nginx.also = [AppNginx(directory / 'app-host', host, int(port), uwsgi.socket, run_dir=run_dir / 'app-host',
                                   link=(link_dir / 'app.pem', link_dir / 'app.key', link_dir / 'ca.pem'))]
        uwsgi.metrics_listen = environ['WSGIAPP_METRICS_LISTEN']
        try:
            uwsgi.start(environ)
            for server in [*nginx.also, nginx]:
                server.start()
            yield uwsgi, nginx
        finally:
            for server in [nginx, *nginx.also]:
                server.stop()
            uwsgi.stop()

    def measure(self, peer, uwsgi, nginx, label, path, headers=(), connections=32, seconds=None, servers=None):
        """wrk on `path` after a 1 s warm-up; uwsgi's and nginx's CPU per request; and for each
        of `servers` ({name: MariaDB}), its mariadbd's CPU per request and DB_COUNTERS' growth."""
        url = f'{nginx.url}{path}'  # HTTPS, as clients reach the site
        script = ROOT / 'bench' / 'post.lua' if label.startswith('POST') else STATUS_LUA
        servers = servers or {}

        def args():  # a fresh name prefix for each POST run
            return (uuid.uuid4().hex[:8], self.token) if label.startswith('POST') else ()
        wrk(url, 1, script, args(), connections, headers)  # warm-up: connections, caches
        window = time.monotonic()  # over which DB_COUNTERS grow: a little more than the run
        counted = {name: db_counters(server) for name, server in servers.items()}  # before the CPU: not in it
        db_before = {name: procs.cpu_seconds(server.pid()) for name, server in servers.items()}
        before, before_nginx = master_cpu_seconds(uwsgi), master_cpu_seconds(nginx)
        result = wrk(url, seconds or self.seconds, script, args(), connections, headers)
        after, after_nginx = master_cpu_seconds(uwsgi), master_cpu_seconds(nginx)
        db_after = {name: procs.cpu_seconds(server.pid()) for name, server in servers.items()}
        requests = max(result['requests'], 1)
        result['cpu_us_per_request'] = (after - before) / requests * 1e6
        result['nginx_cpu_us_per_request'] = (after_nginx - before_nginx) / requests * 1e6
        for name, server in servers.items():
            grown = db_counters(server)
            result[f'{name}_cpu_us_per_request'] = (db_after[name] - db_before[name]) / requests * 1e6
            result[f'{name}_selects'] = grown['Com_select'] - counted[name]['Com_select']
            result[f'{name}_monitor_checks'] = grown['Com_show_slave_status'] - counted[name]['Com_show_slave_status']
        result['counted_seconds'] = time.monotonic() - window
        return result

    def edge(self):
        """wsgiapp with nginx's cache on, as shipped: /api/admins from the cache, past it (a
        token), a static file of the same bytes, a 304; then uncached reads far past capacity."""
        import ssl
        import urllib.request
        self.fill(SMALL)
        private = (f'Authorization: Bearer {self.token}',)
        samples, overload = {}, {}
        with self.serve('wsgiapp') as (uwsgi, nginx):
            context = ssl.create_default_context(cafile=str(self.authority.cert))
            with urllib.request.urlopen(f'{nginx.url}/api/admins', context=context) as response:
                body, etag = response.read(), response.headers['ETag']
            (nginx.static / 'admins.json').write_bytes(body)  # nginx serves it from disk
            cases = {'cached': ('/api/admins', ()), 'uncached': ('/api/admins', private),
                     'static file, same bytes': ('/static/admins.json', ()),
                     '304 (If-None-Match)': ('/api/admins', (f'If-None-Match: {etag}',))}
            for round_number in range(1, self.rounds + 1):
                for label, (path, headers) in cases.items():
                    say(f'round {round_number}/{self.rounds}: edge {label}')
                    samples.setdefault(label, []).append(self.measure('wsgiapp', uwsgi, nginx, label, path, headers))
                for connections in OVERLOAD:
                    say(f'round {round_number}/{self.rounds}: edge overload, {connections} connections')
                    overload.setdefault(connections, []).append(self.measure(
                        'wsgiapp', uwsgi, nginx, 'overload', '/api/admins', private, connections,
                        seconds=self.overload_seconds))
        fields = ('rps', 'p50_ms', 'p99_ms', 'cpu_us_per_request', 'errors')
        cached = {label: {f: statistics.median(s[f] for s in runs) for f in fields} for label, runs in samples.items()}
        loads = {c: {f: statistics.median(s.get(f, 0) for s in runs)
                     for f in ('rps', 'p99_ms', '2xx', '502', '503', 'other')} for c, runs in overload.items()}
        for c, runs in overload.items():
            loads[c]['goodput'] = statistics.median(s.get('2xx', 0) for s in runs) / self.overload_seconds
        return cached, loads

    def links(self):
        """wsgiapp over each link in turn, every round over all three (this machine drifts), on
        requests that reach uwsgi (PAST_THE_CACHE): {link: {route: medians}}, with ratios to `unix`."""
        self.fill(SMALL)
        samples = {}
        for round_number in range(1, self.rounds + 1):
            for link in LINKS:
                with self.serve('wsgiapp', link) as (uwsgi, nginx):
                    for route in LINK_ROUTES:
                        say(f'round {round_number}/{self.rounds}: link {link} {route}')
                        samples.setdefault(link, {}).setdefault(route, []).append(
                            self.measure('wsgiapp', uwsgi, nginx, route, route, PAST_THE_CACHE))
        table = {}
        for link, routes in samples.items():
            for route, runs in routes.items():
                row = {field: statistics.median(s[field] for s in runs)
                       for field in ('rps', 'p50_ms', 'p99_ms', 'cpu_us_per_request', 'nginx_cpu_us_per_request')}
                row['uwsgi_cpu_us_per_request'] = row.pop('cpu_us_per_request')
                table.setdefault(link, {})[route] = row | failures(runs)
        for routes in table.values():
            for route, row in routes.items():
                unix = table['unix'][route]
                row['rps_x_unix'] = row['rps'] / unix['rps']
                for side in ('uwsgi', 'nginx'):
                    base = unix[f'{side}_cpu_us_per_request']
                    row[f'{side}_cpu_x_unix'] = row[f'{side}_cpu_us_per_request'] / base if base else None
        return table

    def metrics(self):
        """wsgiapp with metrics off, off again and on (METRICS_CASES), all served at once and
        measured in turns, route by route, each turn starting with the next case (the
        machine's drift falls on all alike), on requests that reach uwsgi: {case: {route:
        medians}}; the ratios of CPU and req/s to off's are the medians of each turn's."""
        self.fill(SMALL)
        samples = {}
        with ExitStack() as stack:
            served = {case: stack.enter_context(self.serve('wsgiapp', name='wsgiapp-metrics-' + case.replace(' ', '-'),
                                                           environ=environ))
                      for case, environ in METRICS_CASES.items()}
            uwsgi_on = served['on'][0]
            scraper = stack.enter_context(Scraper(f'http://{uwsgi_on.metrics_listen}/metrics'))
            for turn in range(1, 2 * self.rounds + 1):
                first = turn % len(METRICS_CASES)
                cases = list(METRICS_CASES)[first:] + list(METRICS_CASES)[:first]
                for route in METRICS_ROUTES:
                    for case in cases:
                        say(f'turn {turn}/{2 * self.rounds}: metrics {case} {route}')
                        uwsgi, nginx = served[case]
                        result = self.measure('wsgiapp', uwsgi, nginx, route, route, PAST_THE_CACHE)
                        result['stack_cpu_us_per_request'] = (result['cpu_us_per_request']
                                                              + result['nginx_cpu_us_per_request'])
                        samples.setdefault(case, {}).setdefault(route, []).append(result)
        table = {}
        for case, routes in samples.items():
            for route, runs in routes.items():
                row = {field: statistics.median(s[field] for s in runs)
                       for field in ('rps', 'p99_ms', 'stack_cpu_us_per_request')}
                table.setdefault(case, {})[route] = row | failures(runs)
        for case in ('off again', 'on'):
            for route, row in table.get(case, {}).items():
                pairs = list(zip(samples['off'][route], samples[case][route]))
                row['cpu_x_off'] = statistics.median(
                    other['stack_cpu_us_per_request'] / off['stack_cpu_us_per_request'] for off, other in pairs)
                row['rps_x_off'] = statistics.median(other['rps'] / off['rps'] for off, other in pairs)
        table['scrape_ms_max'] = max(scraper.took, default=0) * 1000
        table['turns'] = 2 * self.rounds
        table['in_process'] = self.metrics_in_process()
        for route, row in table['in_process'].items():
            row['us_per_request'] = row['on'] - row['off']
            # The scrapes, at most: the slowest one's whole time, every SCRAPE_EVERY s, over
            # the requests served meanwhile.
            row['scrape_us_per_request'] = table['scrape_ms_max'] * 1000 / (SCRAPE_EVERY * table['on'][route]['rps'])
            added = row['us_per_request'] + row['scrape_us_per_request']
            row['cpu_x_off'] = 1 + added / table['off'][route]['stack_cpu_us_per_request']
        return table

    def metrics_in_process(self):
        """bench/inprocess.py's measures by route: the app's CPU per call with no server around
        it, in one process, its recorder swapped off and on between batches."""
        metrics_dir = self.base / 'metrics-in-process'
        environ = {**os.environ, 'DATABASE_URL': self.mariadb.url(tcp=True), 'DATABASE_REPLICA_URL': '',
                   **METRICS_CASES['on'], 'WSGIAPP_METRICS_DIR': str(metrics_dir)}
        found = {}
        for route in METRICS_ROUTES:
            shutil.rmtree(metrics_dir, ignore_errors=True)  # each route's counts alone
            metrics_dir.mkdir()
            done = subprocess.run([sys.executable, '-m', 'bench.inprocess', route,
                                   *(f'--header={header}' for header in PAST_THE_CACHE)],
                                  cwd=ROOT, env=environ, capture_output=True, text=True, check=True)
            row = found[route] = json.loads(done.stdout)
            if row['statuses'] != ['200 OK']:
                raise RuntimeError(f'in process, {route} answered {row["statuses"]}: {done.stderr}')
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return found

    def replicas(self):
        """wsgiapp reading REPLICA_ROUTE (1k rows, past the cache) on a primary alone, then on a
        replica following it, every round over both: {case: medians}, with each mariadbd's CPU
        and SELECTs per request and whether the reads went where the case says. The pair is
        this phase's own (the bench's MariaDB keeps no binary log), replication.local_pair as
        tests/test_replicas.py uses, and stopped before the phase returns."""
        primary, replica = local_pair(self.base / 'replication')
        servers = {'primary': primary, 'replica': replica}
        samples = {}
        try:
            self.fill(SMALL, primary)
            caught_up(primary, replica)
            self.settle(server=replica)
            cases = {'primary': {'DATABASE_URL': primary.url(tcp=True)},
                     'replica': {'DATABASE_URL': primary.url(tcp=True), 'DATABASE_REPLICA_URL': replica.url(tcp=True)}}
            for round_number in range(1, self.rounds + 1):
                for case in REPLICA_CASES:
                    with self.serve('wsgiapp', databases=cases[case], name=f'wsgiapp-reads-{case}') as (uwsgi, nginx):
                        say(f'round {round_number}/{self.rounds}: reads on the {case}, {REPLICA_ROUTE}')
                        result = self.measure('wsgiapp', uwsgi, nginx, REPLICA_ROUTE, REPLICA_ROUTE,
                                              PAST_THE_CACHE_ANY_SERVER, servers=servers)
                        result['uwsgi_workers'] = len(procs.children(uwsgi.pid()))
                        samples.setdefault(case, []).append(result)
        finally:
            replica.stop()
            primary.stop()
        table = {}
        for case, runs in samples.items():
            row = {field: statistics.median(s[field] for s in runs) for field in (
                'rps', 'p50_ms', 'p99_ms', 'cpu_us_per_request', 'nginx_cpu_us_per_request',
                'primary_cpu_us_per_request', 'replica_cpu_us_per_request')}
            row['uwsgi_cpu_us_per_request'] = row.pop('cpu_us_per_request')
            row |= failures(runs)
            row['requests'] = sum(s['requests'] for s in runs)
            for name in servers:
                row[f'{name}_selects'] = sum(s[f'{name}_selects'] for s in runs)
                row[f'{name}_selects_per_request'] = row[f'{name}_selects'] / max(row['requests'], 1)
            # The monitor (with a replica only): one check a second per uwsgi worker, each one
            # SHOW SLAVE STATUS on the replica and SELECT 1 on the primary.
            row['monitor_checks'] = sum(s['replica_monitor_checks'] for s in runs)
            row['monitor_checks_per_second'] = row['monitor_checks'] / sum(s['counted_seconds'] for s in runs)
            row['uwsgi_workers'] = max(s['uwsgi_workers'] for s in runs)
            row['reads_as_expected'] = all(reads_as_expected(case, s) for s in runs)
            table[case] = row
        for row in table.values():
            row['rps_x_primary'] = row['rps'] / table['primary']['rps']
        return table

    def run(self, deep=True):
        self.mariadb.start()
        from wsgiapp import config, schema
        schema.initdb(config.from_environ({'DATABASE_URL': self.mariadb.admin_url()}))
        runs, rss, scaling = [], {}, {}
        # Every peer served at once, and each route measured peer by peer, in the opposite
        # order every other round: the machine's drift falls on all of them alike, where one
        # peer after another would carry it into their ratios.
        with ExitStack() as stack:
            served = {peer: stack.enter_context(self.serve(peer)) for peer in self.peers}
            for round_number in range(1, self.rounds + 1):
                self.fill(SMALL)  # POSTs of the round before added rows
                for label, (path, peers) in ROUTES.items():
                    order = [peer for peer in self.peers if peer in peers]
                    for peer in (order if round_number % 2 else reversed(order)):
                        say(f'round {round_number}/{self.rounds}: {label} {peer}')
                        runs.append({'round': round_number, 'peer': peer, 'route': label,
                                     **self.measure(peer, *served[peer], label, path, PAST_THE_CACHE)})
            for peer, (uwsgi, _) in served.items():
                rss[peer] = max((procs.rss_kib(worker.pid) for worker in procs.children(uwsgi.pid())),
                                default=0)  # the largest worker
        edge = self.edge() if 'wsgiapp' in self.peers else ({}, {})
        link = self.links() if 'wsgiapp' in self.peers else {}
        replica = self.replicas() if 'wsgiapp' in self.peers else {}
        self.metrics_table = self.metrics() if 'wsgiapp' in self.peers else {}
        self.dblink_table = dblink.phase(self, SMALL, PAST_THE_CACHE) if 'wsgiapp' in self.peers else {}
        if deep:
            for rows in (SMALL, LARGE):
                self.fill(rows)
                path = f'/api/admins?after={rows // 2}'
                samples = []
                with self.serve('wsgiapp') as (uwsgi, nginx):
                    for round_number in range(1, self.rounds + 1):
                        say(f'round {round_number}/{self.rounds}: wsgiapp {path} at {rows:,} rows')
                        samples.append(self.measure('wsgiapp', uwsgi, nginx, path, path, PAST_THE_CACHE))
                scaling[rows] = {key: statistics.median(s[key] for s in samples)
                                 for key in ('rps', 'p50_ms', 'p99_ms', 'errors')}
        return runs, rss, scaling, edge, link, replica

    def close(self):
        self.mariadb.stop()
        for run_dir in self.run_dirs:
            remove_run_dir(run_dir)


class Scraper:
    """with Scraper(url, on): a GET of the metrics every SCRAPE_EVERY seconds while the block
    runs (when `on`), as Prometheus would; how long each took is in `took`."""

    def __init__(self, url, on=True):
        import threading
        self.url, self.on, self.took = url, on, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import urllib.request
        while not self.stop.wait(SCRAPE_EVERY):
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=5) as response:
                response.read()
            self.took.append(time.perf_counter() - started)

    def __enter__(self):
        if self.on:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.on:
            self.thread.join()


def failures(runs):
    """What went wrong over `runs`: wrk's socket errors and 4xx/5xx (`errors`), and the
    answers status.lua counted as other than 2xx (`non_2xx`)."""
    return {'errors': sum(s['errors'] for s in runs),
            'non_2xx': sum(s.get('502', 0) + s.get('503', 0) + s.get('other', 0) for s in runs)}


def reads_as_expected(case, sample):
    """Whether one run's reads went to the server its case names, from each mariadbd's SELECT
    count: one per request there (at least 0.95; in fact a little over 1, since wrk does not
    count the answers still on their way when it stops); on the other server none but the
    monitor's SELECT 1 on the primary, one per replica check (a few may straddle the counts)."""
    other = 'primary' if case == 'replica' else 'replica'
    requests = sample['requests']
    unexplained = sample[f'{other}_selects'] - (sample['replica_monitor_checks'] if other == 'primary' else 0)
    return (requests > 0 and sample[f'{case}_selects'] >= 0.95 * requests
            and unexplained <= max(4, 0.01 * requests))


def medians(runs):
    table = {}
    for run in runs:
        table.setdefault((run['peer'], run['route']), []).append(run)
    return {key: {field: statistics.median(r[field] for r in rows)
                  for field in ('rps', 'p50_ms', 'p99_ms', 'cpu_us_per_request')}
            | {'errors': sum(r['errors'] for r in rows)}
            for key, rows in table.items()}


def versions():
    def first_line(command):
        try:
            done = subprocess.run(command, capture_output=True, text=True)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return 'unknown'
    from importlib.metadata import version
    return {
        'cpus': os.cpu_count(),
        'python': platform.python_version(),
        'uwsgi': first_line([str(Path(sys.executable).parent / 'uwsgi'), '--version']),
        'nginx': first_line(['nginx', '-v']).replace('nginx version: ', ''),
        'mariadb': first_line(['mariadbd', '--version']),
        'wrk': first_line(['wrk', '-v']).split(' [')[0],
        'mysqlclient': version('mysqlclient'),
        'flask': version('Flask'),
        'falcon': version('falcon'),
    }


def edge_targets(edge):
    cached, _ = edge
    if not cached:
        return []
    rows = []
    for peer, minimum in (('uncached', 2.0), ('static file, same bytes', 0.7)):
        ratio = cached['cached']['rps'] / cached[peer]['rps']
        rows.append((f'cached /api/admins req/s >= {minimum} x {peer}', f'{ratio:.2f}', ratio >= minimum))
    rows.append(('uwsgi CPU per cached request near zero (< 1 µs)',
                 f'{cached["cached"]["cpu_us_per_request"]:.2f} µs', cached['cached']['cpu_us_per_request'] < 1))
    return rows


def targets(table, scaling):
    """(target, measured, met) for each of the issue's targets."""
    def get(peer, route, field):
        return table.get((peer, route), {}).get(field, float('nan'))
    rows = []
    for route in ('/', '/{name}'):
        ratio = get('wsgiapp', route, 'rps') / get('ceiling', '/', 'rps')
        rows.append((f'{route} req/s >= 0.90 x ceiling', f'{ratio:.2f}', ratio >= 0.90))
    api = get('wsgiapp', '/api/admins', 'rps')
    for peer, minimum in (('ceiling-db', 0.85), ('seed', 3.0), ('flask', 1.5)):
        ratio = api / get(peer, '/api/admins', 'rps')
        rows.append((f'/api/admins req/s >= {minimum} x {peer}', f'{ratio:.2f}', ratio >= minimum))
    for peer in ('falcon', 'falcon-headers'):
        for route in ROUTES:  # every route the Falcon peers share
            ratio = get('wsgiapp', route, 'rps') / get(peer, route, 'rps')
            rows.append((f'{route} req/s >= 1.0 x {peer}', f'{ratio:.2f}', ratio >= 1.0))
    for route, peer, peer_route in (('/', 'ceiling', '/'), ('/api/admins', 'ceiling-db', '/api/admins')):
        ratio = get('wsgiapp', route, 'cpu_us_per_request') / get(peer, peer_route, 'cpu_us_per_request')
        rows.append((f'{route} CPU/request <= 1.10 x {peer}', f'{ratio:.2f}', ratio <= 1.10))
    worst = max((v['p99_ms'] / v['p50_ms'], key) for key, v in table.items() if key[0] == 'wsgiapp')
    rows.append(('p99 <= 4 x p50 on every wsgiapp route', f'{worst[0]:.2f} ({worst[1][1]})', worst[0] <= 4))
    if scaling:
        ratio = scaling[LARGE]['p50_ms'] / scaling[SMALL]['p50_ms']
        rows.append(('/api/admins?after= p50 at 1M rows <= 1.2 x at 1k', f'{ratio:.2f}', ratio <= 1.2))
    errors = sum(v['errors'] for v in table.values()) + sum(v['errors'] for v in scaling.values())
    rows.append(('no non-2xx answer or socket error', str(int(errors)), errors == 0))
    return rows


def link_lines(link):
    if not link:
        return []

    def ratio(value):
        return '' if value is None else f'{value:.2f}'
    lines = ['', '## The link: nginx to uwsgi', '',
             'wsgiapp past the cache (a consistency token), same site and settings, over three links: `unix`, '
             'one host as shipped (uwsgi\'s unix socket); `mtls`, the cluster\'s link (HTTP/1.1 over mutual TLS '
             'on kept-alive connections, conf/nginx/wsgiapp-link.conf, to an app host\'s nginx on 127.0.0.1, '
             'conf/nginx/wsgiapp-app.conf, which requires the edge\'s client certificate and passes to uwsgi\'s '
             'unix socket); `tcp`, the plain uwsgi protocol on 127.0.0.1, unauthenticated (whoever reaches the '
             'port can make uwsgi load code): only the reference for what a network link costs, never a way to '
             'serve the app. CPU is user + system time per request of uwsgi (master and workers) and of nginx '
             '(master and workers; it also terminates the clients\' HTTPS; for `mtls`, both nginx).', '',
             '| route | link | req/s | p50 ms | p99 ms | uwsgi CPU µs/req | nginx CPU µs/req | errors | '
             'req/s x unix | uwsgi CPU x unix | nginx CPU x unix |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for route in LINK_ROUTES:
        for name in LINKS:
            row = link.get(name, {}).get(route)
            if row:
                lines.append(f'| `{route}` | {name} | {row["rps"]:,.0f} | {row["p50_ms"]:.2f} | {row["p99_ms"]:.2f} | '
                             f'{row["uwsgi_cpu_us_per_request"]:.0f} | {row["nginx_cpu_us_per_request"]:.0f} | '
                             f'{row["errors"] + row["non_2xx"]:.0f} | {row["rps_x_unix"]:.2f} | '
                             f'{ratio(row["uwsgi_cpu_x_unix"])} | {ratio(row["nginx_cpu_x_unix"])} |')
    return lines


def replica_lines(replica):
    if not replica:
        return []
    lines = ['', '## Reads on a replica', '',
             f'wsgiapp, `GET {REPLICA_ROUTE}` (1k rows) past the cache with a bearer token (which the app ignores '
             'on a GET; a consistency token would steer the reads), same site and settings, over a MariaDB primary '
             'and a replica following it by GTID (launcher/replication.py, both on 127.0.0.1 TCP): `primary`, '
             'uwsgi with `DATABASE_URL` only; `replica`, with `DATABASE_REPLICA_URL` too. CPU is user + system '
             'time per request of uwsgi (master and workers) and of each `mariadbd` (all its threads). SELECTs '
             "per request are each server's `Com_select` growth during the runs, which tells where the reads "
             "went: one per request there (a little more: wrk does not count the answers still on their way when "
             "it stops), and on the other server only the monitor's. With a replica, each "
             'uwsgi worker checks it (`SHOW SLAVE STATUS`) and the primary (`SELECT 1`) once a second from a '
             'thread of its own (`monitor checks/s`: the `SHOW SLAVE STATUS` the replica counted, about one a '
             'second per worker; as many `SELECT 1` on the primary): negligible beside the reads.', '',
             '| case | req/s | p50 ms | p99 ms | uwsgi CPU µs/req | primary mariadbd CPU µs/req | '
             'replica mariadbd CPU µs/req | SELECTs/req on primary | SELECTs/req on replica | '
             'monitor checks/s | errors | reads where expected | req/s x primary |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|']
    for case in REPLICA_CASES:
        row = replica.get(case)
        if row:
            lines.append(f'| {case} | {row["rps"]:,.0f} | {row["p50_ms"]:.2f} | {row["p99_ms"]:.2f} | '
                         f'{row["uwsgi_cpu_us_per_request"]:.0f} | {row["primary_cpu_us_per_request"]:.0f} | '
                         f'{row["replica_cpu_us_per_request"]:.0f} | {row["primary_selects_per_request"]:.3f} | '
                         f'{row["replica_selects_per_request"]:.3f} | {row["monitor_checks_per_second"]:.1f} | '
                         f'{row["errors"] + row["non_2xx"]:.0f} | {"yes" if row["reads_as_expected"] else "**no**"} | '
                         f'{row["rps_x_primary"]:.2f} |')
    return lines


def metrics_lines(metrics):
    """The metrics phase's tables, and their targets: at most 5% more CPU per request on `/`,
    3% on `/api/admins` (uwsgi + nginx, on against off)."""
    if not metrics:
        return []
    lines = ['', '## Metrics: off and on', '',
             'wsgiapp with `WSGIAPP_METRICS_DIR` empty (off) and as shipped (on: each worker thread counts every '
             'request in its file, the mule is scraped every 5 s), past the cache, all served at once and measured '
             f'in {metrics["turns"]} turns, each starting with the next case; CPU is uwsgi\'s (with its mule) plus '
             'nginx\'s per request; the ratios to off are the medians of each turn\'s. Slowest scrape while '
             f'measured: {metrics["scrape_ms_max"]:.1f} ms. *Off again* is off once more, measured as on is: its '
             'CPU × off, which would be 1 if the method had no error, is how far two identical stacks read apart '
             'in this run.', '',
             '| route | metrics | req/s | p99 ms | uwsgi + nginx CPU µs/req | CPU × off | req/s × off | target |',
             '|---|---|---:|---:|---:|---:|---:|---|']
    for route, limit in METRICS_LIMITS.items():
        for case in METRICS_CASES:
            row = metrics[case][route]
            ratios, target = '| | |', ''
            if case != 'off':
                ratios = f'| {row["cpu_x_off"]:.3f} | {row["rps_x_off"]:.3f} |'
            if case == 'on':
                target = f'CPU ≤ {limit:.2f} ×: {"yes" if row["cpu_x_off"] <= limit else "**no**"}'
            lines.append(f'| `{route}` | {case} | {row["rps"]:,.0f} | {row["p99_ms"]:.2f} | '
                         f'{row["stack_cpu_us_per_request"]:.0f} {ratios} {target} |')
    in_process = metrics.get('in_process')
    if in_process:
        lines += ['', "The same cost with no server around the app (bench/inprocess.py): the app called directly "
                  "as uwsgi calls it, in one process, its recorder swapped off and on between batches of 500 calls "
                  "(20 turns, off then on, then on then off), counting only that process's CPU time; each case's "
                  "least µs per call. Through nginx and uwsgi, two runs of the same stack differ by more than the "
                  "targets on this shared machine; here the difference is the metrics' code alone. The scrapes "
                  "are counted at most: the slowest one's whole time, every 5 s, over the on row's requests in "
                  "that time. `CPU × off` is what both add to the off row's uwsgi + nginx CPU per request above.", '',
                  '| route | off µs/call | on µs/call | metrics µs/request | scrapes µs/request | CPU × off | target |',
                  '|---|---:|---:|---:|---:|---:|---|']
        for route, limit in METRICS_LIMITS.items():
            row = in_process[route]
            met = 'yes' if row['cpu_x_off'] <= limit else '**no**'
            lines.append(f'| `{route}` | {row["off"]:.2f} | {row["on"]:.2f} | {row["us_per_request"]:.2f} | '
                         f'{row["scrape_us_per_request"]:.2f} | {row["cpu_x_off"]:.3f} | CPU ≤ {limit:.2f} ×: {met} |')
    return lines


def write_report(out, table, rss, scaling, edge, link, replica, info, seconds, rounds, scale=(), metrics=None,
                 database_link=None):
    out.mkdir(parents=True, exist_ok=True)
    base_ceiling = {route: table.get(('ceiling', '/'), {}).get('rps') for route in ROUTES}
    base_ceiling['/api/admins'] = table.get(('ceiling-db', '/api/admins'), {}).get('rps')
    seed = table.get(('seed', '/api/admins'), {}).get('rps')
    uwsgi_version = info['uwsgi'] if info['uwsgi'].startswith('uWSGI') else 'uWSGI ' + info['uwsgi']
    lines = [
        '# Benchmark', '',
        f'`make bench`: wrk -t2 -c32, {seconds} s per case after a 1 s warm-up, through nginx and uwsgi '
        f'(conf/ settings, a unix socket), MariaDB over TCP with a password; medians of {rounds} rounds. '
        f'{info["cpus"]} CPUs; Python {info["python"]}; {uwsgi_version}; nginx {info["nginx"]}; '
        f'{info["mariadb"]}; {info["wrk"]}; mysqlclient {info["mysqlclient"]}; Flask {info["flask"]}; '
        f'Falcon {info["falcon"]}.', '',
        'Ratios: `x ceiling` is against `ceiling` for pages and against `ceiling-db` for `/api/admins`; '
        '`x seed` against the seed\'s app on its one query. CPU is uwsgi\'s user + system time per request.', '',
        '| route | peer | req/s | p50 ms | p99 ms | CPU µs/req | errors | x ceiling | x seed |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for route in ROUTES:
        for peer in PEERS:
            row = table.get((peer, route))
            if not row:
                continue
            ceiling = base_ceiling.get(route)
            ratio_ceiling = f'{row["rps"] / ceiling:.2f}' if ceiling else ''
            ratio_seed = f'{row["rps"] / seed:.2f}' if seed and route.endswith('/api/admins') else ''
            lines.append(f'| `{route}` | {peer} | {row["rps"]:,.0f} | {row["p50_ms"]:.2f} | {row["p99_ms"]:.2f} | '
                         f'{row["cpu_us_per_request"]:.0f} | {row["errors"]:.0f} | {ratio_ceiling} | {ratio_seed} |')
    lines += ['', '## Targets', '', '| target | measured | met |', '|---|---:|---|']
    lines += [f'| {name} | {value} | {"yes" if met else "**no**"} |'
              for name, value, met in targets(table, scaling) + edge_targets(edge)]
    cached, overload = edge
    if cached:
        lines += ['', '## The edge: nginx\'s cache', '',
                  'wsgiapp as shipped (`WSGIAPP_CACHE_SECONDS=1`), `/api/admins` at 1k rows: anonymous (from the '
                  'cache), with a token (past it, to uwsgi and MariaDB), nginx serving the same bytes from a '
                  'static file, and a conditional GET answered 304.', '',
                  '| case | req/s | p50 ms | p99 ms | uwsgi CPU µs/req | x uncached |',
                  '|---|---:|---:|---:|---:|---:|']
        lines += [f'| {label} | {row["rps"]:,.0f} | {row["p50_ms"]:.2f} | {row["p99_ms"]:.2f} | '
                  f'{row["cpu_us_per_request"]:.1f} | {row["rps"] / cached["uncached"]["rps"]:.2f} |'
                  for label, row in cached.items()]
    if overload:
        lines += ['', '## Overload: uncached reads past capacity', '',
                  'With a token (past the cache), so every request needs uwsgi and MariaDB. nginx admits 1,000 at '
                  'a time and answers the rest 503; uwsgi\'s accept queue (4,096) never overflows, so no 502.', '',
                  '| connections | 2xx/s | p99 ms | 503 | 502 | other |', '|---:|---:|---:|---:|---:|---:|']
        lines += [f'| {c:,} | {row["goodput"]:,.0f} | {row["p99_ms"]:.1f} | {row["503"]:.0f} | {row["502"]:.0f} | '
                  f'{row["other"]:.0f} |' for c, row in overload.items()]
    lines += link_lines(link)
    lines += replica_lines(replica)
    lines += metrics_lines(metrics)
    lines += dblink.lines(database_link)
    lines += scaleout.lines(scale)
    if scaling:
        lines += ['', '## Keyset pagination: `/api/admins?after=N/2`', '', '| rows | req/s | p50 ms | p99 ms |',
                  '|---:|---:|---:|---:|']
        lines += [f'| {rows:,} | {s["rps"]:,.0f} | {s["p50_ms"]:.2f} | {s["p99_ms"]:.2f} |'
                  for rows, s in scaling.items()]
    lines += ['', '## Memory', '', 'Largest uwsgi worker RSS after its run: '
              + ', '.join(f'{peer} {kib / 1024:.1f} MiB' for peer, kib in rss.items()) + '.', '']
    (out / 'latest.md').write_text('\n'.join(lines))
    (out / 'latest.json').write_text(json.dumps(
        {'info': info, 'rss_kib': rss, 'scaling': {str(k): v for k, v in scaling.items()},
         'edge': edge[0], 'overload': {str(k): v for k, v in edge[1].items()}, 'link': link, 'replica': replica,
         'scaleout': list(scale), 'metrics': metrics or {}, 'database_link': database_link or {},
         'medians': [{'peer': p, 'route': r, **v} for (p, r), v in table.items()]}, indent=1))
    chart(out / 'latest.png', table, edge[1])


def chart(path, table, overload):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    routes = [route for route in ROUTES if any((peer, route) in table for peer in PEERS)]
    figure, (axes, load_axes) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={'width_ratios': [3, 1]})
    width = 0.8 / len(PEERS)
    for index, peer in enumerate(PEERS):
        xs = [n + (index - (len(PEERS) - 1) / 2) * width for n, route in enumerate(routes) if (peer, route) in table]
        ys = [table[(peer, route)]['rps'] for route in routes if (peer, route) in table]
        axes.bar(xs, ys, width, label=peer)
    axes.set_xticks(range(len(routes)), routes)
    axes.set_ylabel('requests/s (median)')
    axes.set_title('wsgiapp and its peers through nginx + uwsgi (higher is better)')
    axes.legend()
    axes.grid(axis='y', alpha=0.3)
    labels = [f'{c:,}' for c in overload]
    load_axes.bar(labels, [row['goodput'] for row in overload.values()], label='2xx/s')
    load_axes.bar(labels, [row['503'] for row in overload.values()], label='503 (total)', alpha=0.6)
    load_axes.bar(labels, [row['502'] for row in overload.values()], label='502 (total)', color='red')
    load_axes.set_xlabel('connections (uncached reads)')
    load_axes.set_title('overload: goodput, and what was refused')
    load_axes.legend()
    load_axes.grid(axis='y', alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench.run', description=__doc__)
    parser.add_argument('--smoke', action='store_true', help='1 s per case, one round, no 1M-row phase')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--seconds', type=int, default=5)
    parser.add_argument('--out', type=Path, default=ROOT / 'bench' / 'results')
    parser.add_argument('--peers', nargs='+', choices=list(PEERS), default=list(PEERS),
                        help='measure only these (for profiling; the report needs all)')
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds = 1, 1
    base = ROOT / 'var' / f'bench-{uuid.uuid4().hex[:8]}'
    bench = Bench(base, args.seconds, args.rounds, args.peers)
    started = time.monotonic()
    try:
        runs, rss, scaling, edge, link, replica = bench.run(deep=not args.smoke)
        scale = scaleout.phase(args, bench) if 'wsgiapp' in args.peers else []
    finally:
        bench.close()
        shutil.rmtree(base, ignore_errors=True)
    table = medians(runs)
    write_report(args.out, table, rss, scaling, edge, link, replica, versions(), args.seconds, args.rounds, scale,
                 getattr(bench, 'metrics_table', {}), getattr(bench, 'dblink_table', {}))
    say(f'done in {time.monotonic() - started:.0f} s: {args.out / "latest.md"}')
    print((args.out / 'latest.md').read_text())
    astray = [case for case, row in replica.items() if not row['reads_as_expected']]
    if astray:  # the numbers above would be about the wrong server: fail, the report kept
        sys.exit(f'reads did not go where expected in the replica phase: {", ".join(astray)} (see latest.md)')


if __name__ == '__main__':
    main()
