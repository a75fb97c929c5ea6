"""What the control machine's Prometheus (make cluster-monitor) saw during a cluster fault
scenario: the alerts the fault should raise fired, nothing unrelated did, and every one
resolved once the cluster recovered. Scenarios take `since = quiet(monitor)` as they begin
and call `alerts_after(monitor, since, ...)` as they end."""
import json
import threading
import time
import urllib.request

from launcher.wait import wait_for

RESOLVE = 60  # a scrape (5 s) and an evaluation (5 s) after recovery, with room for a slow machine


def quiet(monitor, seconds=RESOLVE):
    """Wait until no alert fires (the last scenario's have resolved); the time, to pass as `since`."""
    wait_for(lambda: monitor.firing() == {}, seconds, 'no alert firing before the scenario', interval=1,
             detail=lambda: f'firing: {monitor.firing()}')
    return time.time()


def fired_since(monitor, since):
    """{(alert, host)} of the alerts that were firing at any moment since `since` (Unix time)."""
    result = monitor.query(f'/api/v1/query_range?query=ALERTS%7Balertstate%3D%22firing%22%7D'
                           f'&start={since:.3f}&end={time.time():.3f}&step=1')['result']
    return {(series['metric']['alertname'], series['metric'].get('host', '')) for series in result}


def alerts_after(monitor, since, fired=(), maybe=()):
    """Every alert of `fired` ((alert, host) pairs) fired since `since`, any other only if it is
    in `maybe`; then all of them resolve within RESOLVE s. The pairs that fired."""
    wait_for(lambda: monitor.firing() == {}, RESOLVE, 'every alert resolved after the scenario', interval=1,
             detail=lambda: f'firing: {monitor.firing()}')
    seen = fired_since(monitor, since)
    assert set(fired) <= seen, f'expected to fire: {sorted(set(fired) - seen)}; fired: {sorted(seen)}'
    assert seen <= set(fired) | set(maybe), f'unrelated alerts fired: {sorted(seen - set(fired) - set(maybe))}'
    return seen


def named(fired):
    """The pairs of alerts_after, for a scenario's report row."""
    return ' '.join(sorted(f'{name}:{host}' for name, host in fired)) or 'none'


class Notified(threading.Thread):
    """with Notified(monitor) as seen: {(alert, host)} that Alertmanager held active and neither
    silenced nor inhibited, asked once a second while the block runs: what it would send."""

    def __init__(self, monitor):
        super().__init__(daemon=True)
        self.monitor, self.seen, self.stop = monitor, set(), threading.Event()

    def run(self):
        while not self.stop.wait(1):
            try:
                self.seen |= {(name, labels.get('host', '')) for name, labels in self.monitor.notified()}
            except OSError:
                pass

    def __enter__(self):
        self.start()
        return self.seen

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def silences(monitor, created_by):
    """{host: how many} of the silences `created_by` made in Alertmanager, expired ones too."""
    with urllib.request.urlopen(f'{monitor.alertmanager_url}/api/v2/silences', timeout=5) as response:
        found = {}
        for silence in json.loads(response.read()):
            if silence['createdBy'] == created_by:
                for matcher in silence['matchers']:
                    if matcher['name'] == 'host':
                        found[matcher['value']] = found.get(matcher['value'], 0) + 1
        return found
