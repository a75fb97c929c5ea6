"""`make monitor` on a running stack: the alert rules' unit tests (promtool), every target up
in a real Prometheus, the app's counter there exactly as sent, the dashboard's queries all
answered, and an alert that fires while the primary is down and resolves once it is back."""
import subprocess
import time
import urllib.request

import pytest
import yaml

from launcher.monitor import ALERTMANAGER, CONSOLES, RULES, Monitor
from launcher.wait import wait_for
from tests.helpers.web import request

pytestmark = [pytest.mark.e2e, pytest.mark.uwsgi, pytest.mark.mariadb]


def test_the_alert_rules_pass_their_unit_tests():
    result = subprocess.run(['promtool', 'test', 'rules', RULES.with_suffix('.test.yml').name],
                            cwd=RULES.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout
    checked = subprocess.run(['amtool', 'check-config', str(ALERTMANAGER)], capture_output=True, text=True)
    assert checked.returncode == 0 and 'SUCCESS' in checked.stdout, checked.stdout + checked.stderr
    # promtool reads every rule the file holds, and every alert has a test case of its own.
    rules = [rule for group in yaml.safe_load(RULES.read_text())['groups'] for rule in group['rules']]
    checked = subprocess.run(['promtool', 'check', 'rules', str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f'{len(rules)} rules found' in checked.stdout, checked.stdout
    tests = yaml.safe_load(RULES.with_suffix('.test.yml').read_text())['tests']
    tested = {case['alertname'] for test in tests for case in test.get('alert_rule_test', [])}
    assert {rule['alert'] for rule in rules if 'alert' in rule} <= tested


@pytest.fixture(scope='module')
def monitor(stack):
    running = Monitor(stack)
    try:
        running.up()
        yield running
    finally:
        running.down()


def test_every_target_is_up_and_counts_arrive_exactly(stack, monitor):
    assert monitor.down_targets() == []
    # Alertmanager is scraped too, and has the series AlertsNotDelivered reads: a rule on a
    # name it does not export would never fire, and promtool's tests could not tell.
    assert monitor.value('sum(up{job="alertmanager"})') == 1
    assert monitor.value('sum(alertmanager_notifications_failed_total{integration="webhook"})') == 0
    # /readyz: no cache answers it, and no prober of the monitor asks it (blackbox asks /healthz).
    expr = 'sum(wsgiapp_requests_total{route="/readyz",method="GET",status="200"})'
    time.sleep(6)  # one scrape after any request of the set-up
    before = monitor.value(expr) or 0
    for _ in range(40):
        assert request(stack, 'GET', '/readyz')[0] == 200
    wait_for(lambda: monitor.value(expr) == before + 40, 20, 'Prometheus to scrape the 40 requests',
             interval=1, detail=lambda: f'{monitor.value(expr)} != {before} + 40')


def test_the_dashboard_answers_every_query(stack, monitor, tmp_path):
    with urllib.request.urlopen(monitor.url + '/consoles/wsgiapp.html', timeout=10) as response:
        page = response.read().decode()
    # A template whose query fails renders Prometheus' error instead of the page.
    assert 'error executing template' not in page and 'Error' not in page
    for heading in ('Alerts firing', 'Targets', 'Requests by route', 'App hosts', 'Where reads went', 'Databases'):
        assert heading in page
    assert '/healthz' in page and 'DOWN' not in page
    assert (CONSOLES / 'wsgiapp.html').exists()
    monitor.screenshot(tmp_path / 'dashboard.png')
    assert (tmp_path / 'dashboard.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_an_alert_fires_while_the_primary_is_down_and_resolves(stack, monitor):
    assert 'PrimaryDown' not in monitor.firing()
    stack.mariadb.stop()
    try:
        started = time.monotonic()
        wait_for(lambda: 'PrimaryDown' in monitor.firing(), 45, 'PrimaryDown to fire', interval=1)
        fired_after = time.monotonic() - started
        assert set(monitor.firing()) <= {'PrimaryDown', 'High5xxRatio'}  # nothing unrelated
        # And Alertmanager has it, for its receiver, with the labels its route groups by.
        notified = dict(wait_for(lambda: [alert for alert in monitor.notified() if alert[0] == 'PrimaryDown'],
                                 15, 'PrimaryDown in Alertmanager', interval=1))
        assert notified['PrimaryDown']['severity'] == 'page' and notified['PrimaryDown']['host'] == 'localhost'
    finally:
        stack.mariadb.start()
    wait_for(lambda: 'PrimaryDown' not in monitor.firing(), 30, 'PrimaryDown to resolve', interval=1)
    wait_for(lambda: 'PrimaryDown' not in dict(monitor.notified()), 30, 'PrimaryDown resolved in Alertmanager',
             interval=1)
    print(f'PrimaryDown fired {fired_after:.0f} s after MariaDB stopped')
    assert fired_after < 40
    stack.wait_ready()
