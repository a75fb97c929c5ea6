"""make bench in its smoke mode (one second per case, one round): every peer and route is
served through nginx and uwsgi, answers only 2xx, and the report and chart are written; so
is wsgiapp over each link between nginx and uwsgi (a unix socket, mutual TLS, plain TCP),
and wsgiapp reading on a MariaDB primary alone, then on a replica following it (its reads
counted where they landed), and over one MariaDB in clear text and over TLS.
Speed itself is judged by `make bench`, as ratios in one run, never here."""
import json
import subprocess
import sys

import pytest

from bench.run import LINK_ROUTES, LINKS, PEERS, REPLICA_CASES, ROUTES
from launcher.process import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]  # MariaDB, uwsgi and nginx, as make bench


def test_bench_smoke(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'bench.run', '--smoke', '--out', str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / 'latest.json').read_text())
    measured = {(row['peer'], row['route']): row for row in report['medians']}
    expected = {(peer, route) for route, (_, peers) in ROUTES.items() for peer in peers}
    assert set(measured) == expected
    for key, row in measured.items():
        assert row['rps'] > 0 and row['errors'] == 0, key
    assert set(report['rss_kib']) == set(PEERS)
    assert (tmp_path / 'latest.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '## Targets' in (tmp_path / 'latest.md').read_text()
    # The edge: each case answered, the cache spares uwsgi, overload never a 502.
    assert set(report['edge']) == {'cached', 'uncached', 'static file, same bytes', '304 (If-None-Match)'}
    assert all(row['rps'] > 0 and row['errors'] == 0 for row in report['edge'].values())
    assert report['edge']['cached']['cpu_us_per_request'] < report['edge']['uncached']['cpu_us_per_request']
    assert set(report['overload']) == {'32', '256', '1000'}
    assert all(row['502'] == 0 and row['other'] == 0 and row['2xx'] > 0
               for row in report['overload'].values()), report['overload']
    # The link: each of unix, mtls and tcp carried both routes, every answer a 2xx.
    assert set(LINKS) == {'unix', 'mtls', 'tcp'} and set(LINK_ROUTES) == {'/', '/api/admins'}
    assert {(link, route) for link, routes in report['link'].items() for route in routes} == \
        {(link, route) for link in LINKS for route in LINK_ROUTES}
    for link, routes in report['link'].items():
        for route, row in routes.items():
            assert row['rps'] > 0 and row['errors'] == 0 and row['non_2xx'] == 0, (link, route, row)
            assert row['uwsgi_cpu_us_per_request'] > 0, (link, route, row)
    assert '## The link: nginx to uwsgi' in (tmp_path / 'latest.md').read_text()
    # Reads on a replica: both cases answered, only 2xx; each one's reads landed on its own
    # server (the phase checks it from Com_select), and with a replica that server did them.
    assert set(REPLICA_CASES) == {'primary', 'replica'} and set(report['replica']) == set(REPLICA_CASES)
    for case, row in report['replica'].items():
        assert row['rps'] > 0 and row['errors'] == 0 and row['non_2xx'] == 0, (case, row)
        assert row['reads_as_expected'], (case, row)
    on_primary, on_replica = report['replica']['primary'], report['replica']['replica']
    assert on_primary['primary_selects'] > on_primary['replica_selects'], on_primary
    assert on_replica['replica_selects'] > on_replica['primary_selects'], on_replica
    assert on_replica['replica_cpu_us_per_request'] > 0, on_replica
    assert '## Reads on a replica' in (tmp_path / 'latest.md').read_text()
    # Scale-out: the single server and the cluster's edge with 2 app hosts (smoke mode)
    # carried both routes, only 2xx; every app host served, and each process's CPU was counted.
    rows = {(row['setup'], row['route']): row for row in report['scaleout']}
    assert set(rows) == {(setup, route) for setup in ('single', '2 app hosts')
                         for route in ('/api/admins', '/')}, sorted(rows)
    for key, row in rows.items():
        assert row['rps'] > 0 and row['errors'] == 0 and row['non_2xx'] == 0, (key, row)
        assert row['cpu_us']['uwsgi'] > 0 and row['cpu_us']['front nginx'] > 0, (key, row)
        if row['apps']:
            assert len(row['requests_per_host']) == row['apps'] and min(row['requests_per_host']) > 0, (key, row)
            assert row['cpu_us']['app nginx'] > 0, (key, row)
            assert row['cpu_us']['journald'] > 0, (key, row)  # the hosts' journals take the access lines
        else:
            assert 'journald' not in row['cpu_us'], (key, row)  # make run's stack has no journal
    assert rows[('single', '/api/admins')]['cpu_us']['mariadbd'] > 0
    assert '## Scale-out' in (tmp_path / 'latest.md').read_text()
    # Metrics off, off again and on: both routes answered in each case, only 2xx, and a ratio
    # to off for the other two.
    cases = ('off', 'off again', 'on')
    assert {case: set(routes) for case, routes in report['metrics'].items() if case in cases} == {
        case: {'/', '/api/admins'} for case in cases}
    for case in cases:
        for route, row in report['metrics'][case].items():
            assert row['rps'] > 0 and row['errors'] == 0 and row['non_2xx'] == 0, (case, route, row)
    assert all(row['cpu_x_off'] > 0 for case in cases[1:] for row in report['metrics'][case].values())
    # In process: both routes timed in both cases, and the metrics counted exactly the calls
    # made with them on (none of the off ones).
    in_process = report['metrics']['in_process']
    assert set(in_process) == {'/', '/api/admins'}
    for route, row in in_process.items():
        assert row['off'] > 0 and row['on'] > 0 and row['counted'] == row['calls_on'] > 0, (route, row)
    assert '## Metrics: off and on' in (tmp_path / 'latest.md').read_text()
    # The database link: both cases answered, only 2xx; the clear one never started TLS, and
    # the TLS one did, once per pooled connection, not once per request.
    link = report['database_link']
    for case in ('clear', 'tls'):
        assert link[case]['rps'] > 0 and link[case]['errors'] == 0 and link[case]['non_2xx'] == 0, (case, link)
    assert link['clear']['tls_handshakes'] == 0, link['clear']
    assert 0 < link['tls']['tls_handshakes'] < link['tls']['requests'] / 20, link['tls']
    assert link['tls']['db_cpu_us_per_request'] > 0 and link['tls']['rps_x_clear'] > 0, link['tls']
    assert '## The database link: clear text and TLS' in (tmp_path / 'latest.md').read_text()
