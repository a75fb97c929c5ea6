"""make bench's scale-out phase (issue 18 item 5): the same reads through one server and
through the cluster's edge with 1, 2 and 3 app hosts, in one run.

    single     launcher.single.Stack, what `make run` starts: nginx (the clients' HTTPS, the
               cache), uwsgi on its unix socket, MariaDB on its unix socket.
    N app hosts launcher.cluster.Cluster(apps=N, replicas=0), what `make cluster` starts: the
               edge nginx (the clients' HTTPS, the cache) passing over kept-alive mutual TLS
               to N app hosts, each an nginx terminating that link and uwsgi on a unix
               socket, and a primary reached over TCP with TLS; each host a booted Debian
               server provisioned by deploy/site.yml (as root). One cluster, grown:
               Cluster.up() with more apps boots the new hosts and the playbook adds them
               to the edge.

replicas=0: with a replica, DATABASE_REPLICA_URL sends every read there and each uwsgi worker
runs its replica monitor; without one, the reads land on the primary as on the single server,
and the only differences from it are the ones measured here (the edge, the link, the app hosts'
nginx, the database over TCP with TLS instead of a unix socket).

Every request is past the cache: `Authorization: Bearer x` makes it private to nginx
($wsgiapp_private in conf/nginx/wsgiapp.conf) and the app ignores it on a GET. The single
server stays up the whole phase, and each cluster size is measured against it anew in every
round (this machine drifts); its row is the median over all of them.

CPU is user + system time per request of every process a request touches: the front nginx
(the single server's, or the edge: the clients' TLS and the edge's client side of the link),
each app host's nginx, uwsgi (master and workers, every host), mariadbd, and on the cluster each
host's journald, which takes a syslog copy of every access line of the edge and of each app host
(conf/nginx/: `journalctl -t wsgiapp_access`, `-t wsgiapp_link`; make run's stack, booted by
no systemd, has no journal). wrk's is not counted, nor the kernel's softirq time for the bridge
and veths (no process owns it). The link's TLS
handshakes are counted from the app hosts' JSON access logs (conf/nginx/wsgiapp-app.conf logs
`connection_requests` and `tls`, $ssl_session_reused): a line with connection_requests 1 is a
connection's first request, so one handshake (a resumed one when tls is "r"). wrk stops mid-request, which makes
the edge close the link connections it had answers in flight on; settle_link opens them again
before each run, and counts them apart.
"""
import http.client
import os
import ssl
import statistics
import threading
import time
from urllib.parse import urlsplit

from launcher import procs
from launcher.cluster import Cluster
from launcher.fleet import missing
from launcher.logs import read as read_log
from launcher.process import free_port, say
from launcher.single import Stack

ROUTES = ('/api/admins', '/')
PROCESSES = ('front nginx', 'app nginx', 'uwsgi', 'mariadbd', 'journald')  # the CPU columns, in a request's order
REPLICAS = 0  # see the docstring


class Setup:
    """One way of serving: its name, URL, the pids of each process kind, the link's logs."""

    def __init__(self, name, apps, url, processes, link_logs=()):
        self.name, self.apps, self.url = name, apps, url
        self.processes = processes  # a function: {kind: [pid, ...]}, read at each measurement
        self.link_logs = list(link_logs)


def single_setup(stack):
    return Setup('single', 0, stack.url, lambda: {
        'front nginx': [stack.nginx.pid()], 'uwsgi': [stack.uwsgi.pid()], 'mariadbd': [stack.mariadb.pid()]})


def cluster_setup(cluster):
    apps = list(cluster.apps)
    return Setup(f'{len(apps)} app host{"s" if len(apps) > 1 else ""}', len(apps), cluster.url, lambda: {
        'front nginx': [cluster.edge.pid()], 'app nginx': [app.nginx.pid() for app in apps],
        'uwsgi': [app.uwsgi.pid() for app in apps], 'mariadbd': [cluster.db.pid()],
        'journald': [process.pid for host in [cluster.edge, *apps, cluster.db]
                     for process in host.processes('systemd-journald')]},
        [app.access_log for app in apps])


def cpu(processes):
    """{kind: CPU seconds} of every process (masters with their workers, live and reaped)."""
    return {kind: sum(procs.cpu_seconds(pid, with_children=True) for pid in pids)
            for kind, pids in processes.items()}


def log_size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


def link_counts(logs, offsets):
    """(requests, handshakes, full handshakes, requests per host) in the logs past `offsets`."""
    requests = handshakes = full = 0
    per_host = []
    for log in logs:
        lines = read_log(log, offsets[log])
        per_host.append(len(lines))
        for line in lines:
            requests += 1
            if line['connection_requests'] == 1:  # a connection's first request: its handshake
                handshakes += 1
                full += line['tls'] != 'r'
    return requests, handshakes, full, per_host


def settle_link(url, route, headers, clients=32, bursts=3):
    """`clients` requests at once (wrk's 32 per app host: as many as the edge may have in
    flight to any one host while wrk runs), each on a connection of its own, read to the end and
    closed cleanly, `bursts` times. wrk stops mid-request: the edge cannot keep a link
    connection with an answer half-read, so it closes those, and the next run would open them
    again. After this, the edge holds as many idle link connections as wrk will need, and the
    handshakes counted next are those of steady serving."""
    parts = urlsplit(url)
    context = ssl._create_unverified_context()  # as wrk: the edge's certificate is not the point here
    fields = dict(header.split(': ', 1) for header in headers)

    def one(barrier):
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
        try:
            connection.connect()
            barrier.wait(10)
            connection.request('GET', route, headers=fields)
            connection.getresponse().read()
        finally:
            connection.close()
    for _ in range(bursts):
        barrier = threading.Barrier(clients)
        threads = [threading.Thread(target=one, args=(barrier,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def measure(setup, route, seconds):
    """wrk on `route` after a 1 s warm-up: req/s, p50/p99, CPU µs per request of each process
    kind, and the link's handshakes per 100 requests (cluster only)."""
    from bench.run import PAST_THE_CACHE_ANY_SERVER, STATUS_LUA, wrk
    url = f'{setup.url}{route}'
    wrk(url, 1, STATUS_LUA, headers=PAST_THE_CACHE_ANY_SERVER)  # warm-up: connections (both ends), caches
    reopened = None
    if setup.link_logs:  # the link connections wrk's abrupt end cost, opened again and counted apart
        offsets = {log: log_size(log) for log in setup.link_logs}
        settle_link(setup.url, route, PAST_THE_CACHE_ANY_SERVER, clients=32 * setup.apps)
        reopened = link_counts(setup.link_logs, offsets)[1]
    processes = setup.processes()
    offsets = {log: log_size(log) for log in setup.link_logs}
    before = cpu(processes)
    result = wrk(url, seconds, STATUS_LUA, headers=PAST_THE_CACHE_ANY_SERVER)
    after = cpu(processes)
    requests = max(result['requests'], 1)
    result['cpu_us'] = {kind: (after[kind] - before[kind]) / requests * 1e6 for kind in processes}
    result['total_cpu_us'] = sum(result['cpu_us'].values())
    result['non_2xx'] = result.get('502', 0) + result.get('503', 0) + result.get('other', 0)
    result['load_1min'] = os.getloadavg()[0]  # this machine is shared: how busy it was
    if setup.link_logs:
        linked, handshakes, full, per_host = link_counts(setup.link_logs, offsets)
        result |= {'link_requests': linked, 'handshakes': handshakes, 'full_handshakes': full,
                   'requests_per_host': per_host, 'reopened_after_wrk': reopened}
    return result


def phase(args, bench):
    """The scale-out rows: [{setup, apps, route, rps, p50_ms, p99_ms, cpu_us: {kind: µs},
    total_cpu_us, rps_x_single, cpu_x_single, handshakes_per_100, ...}], single first. In
    --smoke mode one round of 2 s runs, with 2 app hosts only (one provisioning of booted hosts)."""
    from bench.run import SMALL
    if missing():
        say(f'scale-out phase left out: the cluster {missing()}')
        return []
    rounds, seconds = (1, 2) if args.smoke else (bench.rounds, bench.seconds)
    sizes = (2,) if args.smoke else (1, 2, 3)
    base = bench.base / 'scaleout'
    started = time.monotonic()
    stack = Stack(base / 'single', port=free_port(), tls_port=free_port())
    cluster = None
    samples = {}  # (setup name, apps, route) -> [results]
    try:
        stack.up(sample=False)
        bench.fill(SMALL, server=stack.mariadb)
        single = single_setup(stack)
        for size in sizes:
            cluster = Cluster(base / 'cluster', apps=size, replicas=REPLICAS)
            cluster.up()  # the first time all of it; then the new app hosts, and the edge reloaded
            if size == sizes[0]:
                bench.fill(SMALL, server=cluster.db)
            grown = cluster_setup(cluster)
            for round_number in range(1, rounds + 1):
                for setup in (single, grown):
                    for route in ROUTES:
                        say(f'round {round_number}/{rounds}: scale-out, {setup.name} ({size} app hosts up), {route}')
                        samples.setdefault((setup.name, setup.apps, route), []).append(
                            measure(setup, route, seconds))
    finally:
        if cluster:
            cluster.down()
        stack.down()
    rows = summarize(samples)
    say(f'scale-out phase: {time.monotonic() - started:.0f} s')
    for name, value, met in targets(rows):
        say(f'scale-out target: {name}: {value} ({"met" if met else "NOT met"})')
    return rows


def summarize(samples):
    rows = []
    for (name, apps, route), runs in samples.items():
        row = {'setup': name, 'apps': apps, 'route': route, 'runs': len(runs),
               **{field: statistics.median(s[field] for s in runs) for field in ('rps', 'p50_ms', 'p99_ms')},
               'cpu_us': {kind: statistics.median(s['cpu_us'][kind] for s in runs) for kind in runs[0]['cpu_us']},
               'errors': sum(s['errors'] for s in runs), 'non_2xx': sum(s['non_2xx'] for s in runs),
               'requests': sum(s['requests'] for s in runs), 'rps_runs': [s['rps'] for s in runs],
               'load_1min': [s['load_1min'] for s in runs]}
        row['total_cpu_us'] = sum(row['cpu_us'].values())
        if 'handshakes' in runs[0]:
            linked = sum(s['link_requests'] for s in runs)
            row['link_requests'] = linked
            row['handshakes'] = sum(s['handshakes'] for s in runs)
            row['full_handshakes'] = sum(s['full_handshakes'] for s in runs)
            row['reopened_after_wrk'] = sum(s['reopened_after_wrk'] for s in runs)
            row['handshakes_per_100'] = 100 * row['handshakes'] / max(linked, 1)
            row['requests_per_host'] = [sum(each) for each in zip(*(s['requests_per_host'] for s in runs))]
        rows.append(row)
    rows.sort(key=lambda row: (ROUTES.index(row['route']), row['apps']))
    for row in rows:
        base = find(rows, 0, row['route'])
        row['rps_x_single'] = row['rps'] / base['rps'] if base and base['rps'] else None
        row['cpu_x_single'] = row['total_cpu_us'] / base['total_cpu_us'] if base and base['total_cpu_us'] else None
    return rows


def find(rows, apps, route):
    return next((row for row in rows if row['apps'] == apps and row['route'] == route), None)


def targets(rows):
    """(target, measured, met) for the issue's scale-out targets that this run can judge."""
    out = []

    def ratio(apps, route, field, other_apps, other_field=None):
        row, other = find(rows, apps, route), find(rows, other_apps, route)
        if not (row and other and other[other_field or field]):
            return None
        return row[field] / other[other_field or field]
    for name, value, ok in (
            ('3 hosts vs single: /api/admins total CPU/request <= 1.5 x', ratio(3, '/api/admins', 'total_cpu_us', 0),
             lambda v: v <= 1.5),
            ('3 hosts vs single: /api/admins req/s >= 0.75 x', ratio(3, '/api/admins', 'rps', 0), lambda v: v >= 0.75),
            ('3 hosts vs single: / total CPU/request <= 2 x', ratio(3, '/', 'total_cpu_us', 0), lambda v: v <= 2),
            ('3 hosts vs 1: /api/admins req/s >= 0.95 x', ratio(3, '/api/admins', 'rps', 1), lambda v: v >= 0.95),
            ('3 hosts vs 1: / req/s >= 0.95 x', ratio(3, '/', 'rps', 1), lambda v: v >= 0.95)):
        if value is not None:
            out.append((name, f'{value:.2f}', ok(value)))
    linked = [row for row in rows if 'handshakes_per_100' in row]
    if linked:
        worst = max(linked, key=lambda row: row['handshakes_per_100'])
        out.append(('link TLS handshakes <= 1 per 100 requests (worst case)',
                    f'{worst["handshakes_per_100"]:.2f} ({worst["setup"]}, {worst["route"]})',
                    worst['handshakes_per_100'] <= 1))
    errors = sum(row['errors'] + row['non_2xx'] for row in rows)
    out.append(('no non-2xx answer or socket error', str(int(errors)), errors == 0))
    return out


def lines(rows):
    """The report's "Scale-out" section (markdown lines), empty without rows."""
    if not rows:
        return []

    def number(value, spec):
        return '' if value is None else format(value, spec)
    runs = max(row['runs'] for row in rows if row['apps'])
    load = [value for row in rows for value in row['load_1min']]
    out = ['', '## Scale-out', '',
           'wsgiapp past the cache (`Authorization: Bearer x`: private to nginx, ignored by the app on a GET), '
           '`/api/admins` at 1k rows and `/`, through HTTPS: `single` is `make run`\'s stack (launcher.single.Stack: '
           'nginx, uwsgi on a unix socket, MariaDB on a unix socket); `N app hosts` is `make cluster`\'s '
           '(launcher.cluster.Cluster, one cluster grown host by host): the edge nginx, kept-alive mutual TLS to '
           'N app hosts (each an nginx terminating the link and uwsgi with conf/uwsgi.ini), and a primary over TCP '
           'with TLS, no replica (with one, every read would go to it: here the reads land on the primary, as on '
           'the single server); each host a network namespace on a bridge. All of it shares this machine\'s cores '
           'with wrk, so more app hosts add no CPU: what scale-out is judged on here is what each request costs '
           'and that adding hosts costs no throughput. The single server is measured again beside each cluster '
           f'size in every round (each cluster row: the median of {runs} run(s); the single server\'s: of all its '
           'runs). CPU is user + system time per request of each process a request touches (masters '
           'and workers; every app host summed), and on the cluster each host\'s journald, which takes a syslog copy '
           'of each access line of the edge and of every app host (`make run`\'s stack, booted by no systemd, has no '
           'journal); wrk\'s and the kernel\'s bridge work are not counted. Handshakes: '
           'new connections on the link (a request with `connection_requests` 1 in the app hosts\' access logs) '
           'per 100 requests '
           'during the run. wrk stops mid-request, and the edge closes each link connection whose answer it had '
           'not read to the end (one per client that leaves mid-request): after the 1 s warm-up, 3 bursts of 32 '
           'requests per app host at once, each completed, make the edge open those again before the run '
           '(`reopened`: how many, over all the runs; not in the per-100 figure). '
           f'The 1-minute load average after the runs was {min(load):.1f} to {max(load):.1f} on {os.cpu_count()} CPUs.',
           '',
           '| setup | route | req/s | x single | p50 ms | p99 ms | front nginx µs/req | app nginx µs/req | '
           'uwsgi µs/req | mariadbd µs/req | journald µs/req | total µs/req | total CPU x single | '
           'link handshakes /100 req | reopened | errors |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for row in rows:
        cpu_cells = ' | '.join(number(row['cpu_us'].get(kind), '.0f') for kind in PROCESSES)
        out.append(f'| {row["setup"]} | `{row["route"]}` | {row["rps"]:,.0f} | {number(row["rps_x_single"], ".2f")} | '
                   f'{row["p50_ms"]:.2f} | {row["p99_ms"]:.2f} | {cpu_cells} | {row["total_cpu_us"]:.0f} | '
                   f'{number(row["cpu_x_single"], ".2f")} | {number(row.get("handshakes_per_100"), ".2f")} | '
                   f'{number(row.get("reopened_after_wrk"), "d")} | {row["errors"] + row["non_2xx"]:.0f} |')
    out += ['', '| scale-out target | measured | met |', '|---|---:|---|']
    out += [f'| {name} | {value} | {"yes" if met else "**no**"} |' for name, value, met in targets(rows)]
    return out
