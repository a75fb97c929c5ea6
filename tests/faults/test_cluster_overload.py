"""Overload through the cluster (issue 19 item 2): uncached reads (a bearer token takes
them past the edge's cache) far past what the app hosts serve, sent to the edge only. A
busy app host is not a dead one: no 502, ever; the edge admits what the app hosts can
start (limit_conn, sized per app host by the launcher) and answers the rest 503 with
Retry-After, at once; goodput per CPU-second left to the stack stays at least 0.9 of what 32
connections get (make faults; make test holds a floor below this machine's noise)."""
import shutil

import pytest

from tests.helpers.alerts import alerts_after, named, quiet
from tests.helpers.load import report
from tests.helpers.web import call
from tests.helpers.wrk import overload

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]
PATH = '/api/admins?limit=10'


@pytest.mark.parametrize('connections, rounds, seconds, least', [
    # make test: two short rounds at 256 (this machine drifts), and one at 1,000. Floors
    # below this machine's noise, far above a collapse (the old link's 502s read near 0): at
    # 256, 0.80 to 1.04 read here, the goodput steady (1,740 to 1,890/s) and the 32
    # connections' between 1,817 and 2,202/s from one run to the next.
    (256, 2, 8, 0.7),
    # A short round: a floor for a noisy shared machine (overload() opens the link's up to
    # 768 connections first; 0.66 with them opened during the measured run, 0.84 without).
    (1000, 1, 8, 0.6),
    pytest.param(256, 3, 10, 0.9, marks=pytest.mark.slow),
    pytest.param(1000, 3, 10, 0.9, marks=pytest.mark.slow)])
def test_overload_through_the_edge_is_503_never_502(cluster, cluster_monitor, connections, rounds, seconds, least):
    if not shutil.which('wrk'):
        pytest.fail('wrk is not installed: make test installs it (Debian package wrk)')
    since = quiet(cluster_monitor)
    private = [f'Authorization: Bearer {cluster.token()}']
    found = overload(cluster, connections, rounds, seconds, PATH, private)
    # Busy hosts are not down ones, and the edge's 503s never reach the app's counters.
    fired = alerts_after(cluster_monitor, since)
    report(f'k. cluster overload: {connections} connections against 32, {rounds} round(s) of {seconds} s',
           ['wrk'] * found.pop('runs'), **found, alerts=named(fired))
    assert found['502'] == 0 and found['socket_errors'] == 0 and found['other'] == 0
    assert found['goodput_32'] > 0
    assert found['ratio_per_stack_cpu'] >= least
    # Every app host is still in the edge's rotation: a read right after is answered.
    assert call(cluster, 'GET', PATH, headers={'Authorization': private[0].split(': ', 1)[1]})[0] == 200

