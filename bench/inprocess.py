"""What the app's metrics cost per request, in one process with no server around the app:
the metrics phase's precise half. Through nginx and uwsgi, two runs of the same stack differ
by several percent on this shared machine, more than the metrics' targets; here the app is
called directly, as uwsgi calls it, and only this process's CPU time is counted.

    python -m bench.inprocess ROUTE [--header 'Name: value'] [--calls N] [--turns T]

The app is built once, from the environment as under uwsgi, with WSGIAPP_METRICS_DIR set;
its recorder is swapped for metrics.Off between batches of N calls (off then on, then on
then off, T turns). Two processes differ more than the metrics cost; two batches of one do
not. Prints each case's least CPU time per call (the least is the batch the machine
disturbed least), the statuses answered, the calls made with metrics on, and the requests
the metrics counted.
"""
import argparse
import io
import json
import sys
import time

from wsgiapp import metrics


def environ(route, headers):
    """What nginx's uwsgi_params and uwsgi hand the app for a GET of `route` over HTTPS."""
    found = {'REQUEST_METHOD': 'GET', 'PATH_INFO': route, 'REQUEST_URI': route, 'QUERY_STRING': '',
             'CONTENT_TYPE': '', 'CONTENT_LENGTH': '', 'SERVER_PROTOCOL': 'HTTP/1.1', 'REQUEST_SCHEME': 'https',
             'HTTPS': 'on', 'REMOTE_ADDR': '127.0.0.1', 'REMOTE_PORT': '50000', 'SERVER_NAME': 'localhost',
             'SERVER_PORT': '8443', 'HTTP_HOST': 'localhost:8443',
             'HTTP_X_REQUEST_ID': '0123456789abcdef0123456789abcdef',
             'wsgi.version': (1, 0), 'wsgi.url_scheme': 'https', 'wsgi.errors': sys.stderr,
             'wsgi.multithread': True, 'wsgi.multiprocess': True, 'wsgi.run_once': False}
    for header in headers:
        name, _, value = header.partition(':')
        found['HTTP_' + name.strip().upper().replace('-', '_')] = value.strip()
    return found


def cost(application, route, headers=(), calls=500, turns=20):
    """{'off': µs, 'on': µs, 'statuses', 'calls_on', 'counted'} for `application` on `route`."""
    base = environ(route, headers)
    recorders = {'on': metrics.recorder, 'off': metrics.Off()}
    if isinstance(recorders['on'], metrics.Off):
        raise SystemExit('WSGIAPP_METRICS_DIR is not set: there is nothing to compare')
    statuses = set()

    def start_response(status, response_headers, exc_info=None):
        statuses.add(status)

    def batch(case):
        # Both places the app records through: the pool's calls read the module's recorder.
        metrics.recorder = application.metrics = recorders[case]
        started = time.process_time()
        for _ in range(calls):
            body = application(dict(base, **{'wsgi.input': io.BytesIO()}), start_response)
            for _chunk in body:
                pass
            if hasattr(body, 'close'):
                body.close()
        return (time.process_time() - started) / calls * 1e6
    batch('on')  # warm: the pool's connection, the route's metric slots
    least = {}
    for turn in range(turns):
        for case in (('off', 'on') if turn % 2 == 0 else ('on', 'off')):
            least[case] = min(least.get(case, float('inf')), batch(case))
    # What the on batches counted: exactly their calls, and none of the off batches'.
    counted = sum(value for key, value in metrics.collect(recorders['on'].directory).items()
                  if key.startswith('wsgiapp_requests_total{'))
    return {**least, 'statuses': sorted(statuses), 'calls_on': calls * (turns + 1), 'counted': counted}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench.inprocess', description=__doc__)
    parser.add_argument('route')
    parser.add_argument('--header', action='append', default=[])
    parser.add_argument('--calls', type=int, default=500)
    parser.add_argument('--turns', type=int, default=20)
    args = parser.parse_args(argv)
    from wsgiapp.app import application
    print(json.dumps(cost(application, args.route, args.header, args.calls, args.turns)))


if __name__ == '__main__':
    main()
