"""wsgiapp.metrics without a server: workers' files summed exactly, a respawned worker carrying
on with its predecessor's counts, gauges that start again at zero, and Prometheus' text."""
import os
import re
import threading

import pytest

from wsgiapp import exporter, metrics


def worker(directory, number):
    return metrics.Recorder(str(directory), worker_id=lambda: number)


def test_counts_of_every_worker_are_summed(tmp_path):
    first, second = worker(tmp_path, 1), worker(tmp_path, 2)
    for _ in range(3):
        first.request('/', 'GET', 200, 0.002)
    for _ in range(4):
        second.request('/', 'GET', 200, 0.3)
    second.request('/api/admins', 'POST', 201, 0.02)
    first.add('wsgiapp_idempotent_replays_total', 2)
    totals = metrics.collect(str(tmp_path))
    assert totals['wsgiapp_requests_total{route="/",method="GET",status="200"}'] == 7
    assert totals['wsgiapp_requests_total{route="/api/admins",method="POST",status="201"}'] == 1
    assert totals['wsgiapp_idempotent_replays_total'] == 2
    assert totals['wsgiapp_request_duration_seconds_count{route="/"}'] == 7
    assert totals['wsgiapp_request_duration_seconds_sum{route="/"}'] == pytest.approx(3 * 0.002 + 4 * 0.3)
    assert sorted(os.listdir(tmp_path)) == ['worker-1-0.keys', 'worker-1-0.values',
                                            'worker-2-0.keys', 'worker-2-0.values']


def test_each_thread_counts_in_files_of_its_own_and_none_is_lost(tmp_path):
    # No lock around a count: exact because no two threads write the same file, whatever
    # the interpreter does between a read and its write.
    recorder, threads, each = worker(tmp_path, 1), 4, 20000
    start = threading.Barrier(threads)

    def serve():
        start.wait()
        for _ in range(each):
            recorder.request('/', 'GET', 200, 0.001)
    workers = [threading.Thread(target=serve) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    totals = metrics.collect(str(tmp_path))
    assert totals['wsgiapp_requests_total{route="/",method="GET",status="200"}'] == threads * each
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith('.keys')) == [
        f'worker-1-{number}.keys' for number in range(threads)]


def test_uwsgis_master_records_into_no_file(tmp_path):
    master = worker(tmp_path, 0)  # uwsgi's worker id in the master: its workers fork from it
    master.request('/', 'GET', 200, 0.001)
    master.add('wsgiapp_reads_total{server="primary"}')
    assert os.listdir(tmp_path) == []
    assert not hasattr(master.local, 'region')  # nothing for a forked worker to inherit


def test_a_respawned_worker_carries_on_and_its_gauges_start_at_zero(tmp_path):
    in_use = 'wsgiapp_pool_connections_in_use{server="primary"}'
    dead = worker(tmp_path, 1)
    dead.request('/', 'GET', 200, 0.001)
    dead.add(in_use)  # killed holding a connection, which died with it
    respawned = worker(tmp_path, 1)  # same worker id, new process: reads the same files
    respawned.add(in_use)
    respawned.request('/', 'GET', 200, 0.001)
    respawned.add(in_use, -1.0)
    totals = metrics.collect(str(tmp_path))
    assert totals['wsgiapp_requests_total{route="/",method="GET",status="200"}'] == 2
    assert totals[in_use] == 0  # the dead worker's connection is not in use any more
    assert sorted(os.listdir(tmp_path)) == ['worker-1-0.keys', 'worker-1-0.values']  # none per process id


def test_a_line_still_being_written_is_not_read(tmp_path):
    recorder = worker(tmp_path, 1)
    recorder.add('wsgiapp_pool_waits_total{server="primary"}', 5)
    with open(tmp_path / 'worker-1-0.keys', 'a') as keys:
        keys.write('wsgiapp_pool_timeouts_tot')  # no newline yet
    assert metrics.collect(str(tmp_path)) == {'wsgiapp_pool_waits_total{server="primary"}': 5}


def test_unknown_methods_share_one_label(tmp_path):
    recorder = worker(tmp_path, 1)
    for method in ('BREW', 'PROPFIND', 'GET'):
        recorder.request('unmatched', method, 405, 0.0001)
    totals = metrics.collect(str(tmp_path))
    assert {key for key in totals if key.startswith('wsgiapp_requests_total')} == {
        'wsgiapp_requests_total{route="unmatched",method="other",status="405"}',
        'wsgiapp_requests_total{route="unmatched",method="GET",status="405"}'}


def test_the_exposition_has_cumulative_buckets_and_one_type_per_family(tmp_path):
    recorder = worker(tmp_path, 1)
    for seconds in (0.0005, 0.004, 0.004, 0.2, 30):
        recorder.request('/{name}', 'GET', 200, seconds)
    text = metrics.exposition(metrics.collect(str(tmp_path)), exporter.uwsgi_lines(None))
    buckets = re.findall(r'wsgiapp_request_duration_seconds_bucket\{route="/\{name\}",le="([^"]+)"\} (\S+)', text)
    assert [bound for bound, _ in buckets] == [str(b) for b in metrics.BUCKETS] + ['+Inf']
    counts = dict(buckets)
    assert [counts[bound] for bound in ('0.001', '0.005', '0.25', '10.0', '+Inf')] == ['1', '3', '4', '4', '5']
    assert text.count('# TYPE wsgiapp_request_duration_seconds histogram') == 1
    assert '# TYPE wsgiapp_requests_total counter' in text and 'uwsgi_up 0' in text
    assert text.endswith('\n')


def test_off_records_nothing(tmp_path):
    assert isinstance(metrics.configure(None), metrics.Off)
    metrics.recorder.request('/', 'GET', 200, 0.1)
    metrics.recorder.add('wsgiapp_reads_total{server="primary"}')
    assert os.listdir(tmp_path) == []


def test_configure_outside_uwsgi_keeps_what_is_there(tmp_path):
    worker(tmp_path, 1).request('/', 'GET', 200, 0.001)
    try:
        recorder = metrics.configure(str(tmp_path))
        recorder.request('/', 'GET', 200, 0.001)
    finally:
        metrics.configure(None)
    assert metrics.collect(str(tmp_path))['wsgiapp_requests_total{route="/",method="GET",status="200"}'] == 2


def test_uwsgi_stats_become_worker_states():
    stats = {'listen_queue': 3, 'listen_queue_errors': 1,
             'workers': [{'status': 'busy', 'respawn_count': 2, 'cores': [{'in_request': 1}, {'in_request': 1}]},
                         {'status': 'idle', 'respawn_count': 1, 'cores': [{'in_request': 0}, {'in_request': 0}]},
                         {'status': 'busy', 'respawn_count': 1, 'cores': [{'in_request': 0}, {'in_request': 1}]}]}
    lines = exporter.uwsgi_lines(stats)
    assert 'wsgiapp_requests_in_flight 3' in lines  # every worker's cores in a request
    assert 'uwsgi_workers{state="busy"} 2' in lines and 'uwsgi_workers{state="idle"} 1' in lines
    assert 'uwsgi_worker_respawns_total 1' in lines and 'uwsgi_listen_queue 3' in lines
    assert 'uwsgi_up 1' in lines
