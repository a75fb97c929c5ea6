"""make bench's database-link phase (issue 18): what TLS on the link to MariaDB costs.

One MariaDB of this phase's own, with a certificate of a CA of its own for 127.0.0.1, offers
TLS and, unlike the cluster's servers, does not require it, so that both cases read the same
server, buffer pool and rows:

    clear  DATABASE_URL over TCP in clear text, as the rest of make bench reads;
    tls    the same URL with ?ssl-ca=...&ssl-mode=VERIFY_IDENTITY, as the cluster's app hosts
           reach their primary (TLS 1.3, the CA and the name checked).

wsgiapp is served twice, both at once, and `/api/admins` (1k rows, past the cache) measured
in turns, clear then tls, then tls then clear: the machine's drift falls on both alike, and
the ratios are the medians of each turn's. CPU is uwsgi's, nginx's and mariadbd's per
request (TLS costs the server as much as the client). The pool keeps its connections, so a
TLS handshake happens once per pooled connection, not per request: the server's
`Ssl_accepts` during each case's runs (warm-ups included) says how many there were.
"""
import os
import shutil
import statistics
from contextlib import ExitStack

from launcher.mariadb import MariaDB
from launcher.process import free_port, say
from launcher.single import make_run_dir, run_dir_for
from launcher.tls import Authority

CASES = ('clear', 'tls')
ROUTE = '/api/admins'
TARGET = 0.97  # tls req/s x clear, at least (issue 18: database TLS costs at most 3%)
FIELDS = ('rps', 'p99_ms', 'cpu_us_per_request', 'nginx_cpu_us_per_request', 'db_cpu_us_per_request',
          'total_cpu_us_per_request')


def ssl_accepts(server):
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")[0][1])


def phase(bench, rows, headers):
    """{case: medians, 'turns': n}: `bench` (bench.run.Bench) serving wsgiapp over each case's
    link to this phase's MariaDB, filled with `rows` rows, every request sent with `headers`."""
    from wsgiapp import config, schema
    server = MariaDB(bench.base / 'db-tls', port=free_port(), tls_required=False,
                     authority=Authority(bench.base / 'db-ca', 'wsgiapp database CA'))
    samples, handshakes = {}, dict.fromkeys(CASES, 0)
    try:
        server.start()
        # uwsgi's workers drop root (conf/uwsgi.ini's uid) and may not enter the bench's
        # directory (a private temporary one, say): they read a copy of the CA in a run
        # directory they may enter, as they reach their socket.
        ca_dir = run_dir_for(bench.base / 'db-ca-copy')
        make_run_dir(ca_dir)
        bench.run_dirs.append(ca_dir)
        ca = shutil.copy(server.authority.cert, ca_dir / 'ca.pem')
        os.chmod(ca, 0o644)
        urls = {'clear': server.url(tcp=True, tls=False), 'tls': server.url(tcp=True, ca=ca)}
        schema.initdb(config.from_environ({'DATABASE_URL': server.admin_url()}))
        bench.fill(rows, server)
        with ExitStack() as stack:
            served = {case: stack.enter_context(bench.serve('wsgiapp', name=f'wsgiapp-db-{case}',
                                                            databases={'DATABASE_URL': urls[case]}))
                      for case in CASES}
            for turn in range(1, 2 * bench.rounds + 1):
                for case in (CASES if turn % 2 else tuple(reversed(CASES))):
                    say(f'turn {turn}/{2 * bench.rounds}: database link {case} {ROUTE}')
                    before = ssl_accepts(server)
                    result = bench.measure('wsgiapp', *served[case], ROUTE, ROUTE, headers, servers={'db': server})
                    handshakes[case] += ssl_accepts(server) - before
                    result['total_cpu_us_per_request'] = sum(result[f'{part}cpu_us_per_request']
                                                             for part in ('', 'nginx_', 'db_'))
                    samples.setdefault(case, []).append(result)
    finally:
        server.stop()
    from bench.run import failures  # bench.run imports this module
    table = {}
    for case, runs in samples.items():
        table[case] = {field: statistics.median(run[field] for run in runs) for field in FIELDS}
        table[case] |= {'requests': sum(run['requests'] for run in runs), 'tls_handshakes': handshakes[case],
                        **failures(runs)}
    pairs = list(zip(samples['clear'], samples['tls']))
    table['tls']['rps_x_clear'] = statistics.median(tls['rps'] / clear['rps'] for clear, tls in pairs)
    table['tls']['cpu_x_clear'] = statistics.median(tls['total_cpu_us_per_request'] / clear['total_cpu_us_per_request']
                                                    for clear, tls in pairs)
    table['turns'] = 2 * bench.rounds
    return table


def lines(table):
    """The phase's section of latest.md, with its target."""
    if not table:
        return []
    out = ['', '## The database link: clear text and TLS', '',
           f'wsgiapp, `{ROUTE}` (1k rows) past the cache, reading one MariaDB over TCP that offers TLS without '
           'requiring it: `clear`, as the rest of this benchmark reads; `tls`, verified as the cluster\'s app hosts '
           'connect (`ssl-ca`, `ssl-mode=VERIFY_IDENTITY`). Both served at once and measured in '
           f'{table["turns"]} turns (clear then tls, then tls then clear); the ratios are the medians of each '
           'turn\'s. CPU is user + system time per request of uwsgi, nginx and mariadbd. TLS handshakes: the '
           'server\'s `Ssl_accepts` during each case\'s runs (the pool opens its connections once).', '',
           '| link | req/s | p99 ms | uwsgi µs/req | nginx µs/req | mariadbd µs/req | total µs/req | '
           'TLS handshakes / requests | req/s × clear | CPU × clear | errors |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for case in CASES:
        row = table[case]
        ratios = (f'{row["rps_x_clear"]:.3f} | {row["cpu_x_clear"]:.3f}' if case == 'tls' else '1.00 | 1.00')
        out.append(f'| {case} | {row["rps"]:,.0f} | {row["p99_ms"]:.2f} | {row["cpu_us_per_request"]:.0f} | '
                   f'{row["nginx_cpu_us_per_request"]:.0f} | {row["db_cpu_us_per_request"]:.0f} | '
                   f'{row["total_cpu_us_per_request"]:.0f} | {row["tls_handshakes"]:,} / {row["requests"]:,} | '
                   f'{ratios} | {row["errors"] + row["non_2xx"]:.0f} |')
    met = table['tls']['rps_x_clear'] >= TARGET
    out += ['', '| target | measured | met |', '|---|---:|---|',
            f'| database TLS: req/s >= {TARGET:.2f} x clear text | {table["tls"]["rps_x_clear"]:.3f} | '
            f'{"yes" if met else "**no**"} |']
    return out
