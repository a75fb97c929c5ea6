"""python -m wsgiapp serve | initdb [--sample] | check | token | metrics"""
import argparse
import os
import sys


def serve(args):
    """The development server (wsgiref): what the seed's app.run() block was for, minus the clash with uwsgi."""
    from wsgiref.simple_server import make_server

    from wsgiapp.app import application
    with make_server(args.host, args.port, application) as server:
        print(f'serving on http://{args.host}:{args.port}/ (development only; use uwsgi behind nginx)',
              file=sys.stderr)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def initdb(args):
    """Create the schema if it is missing, and with --sample add sample rows (idempotently)."""
    from wsgiapp import config, schema
    from wsgiapp.pool import Unavailable
    try:
        rows = schema.initdb(config.from_environ(), sample=args.sample)
    except Unavailable as error:
        sys.exit(f'initdb: {error}')
    print(f'initdb: vc_admin is ready with {rows} rows', file=sys.stderr)


def token(args):
    """A new API token, alone on stdout: echo "WSGIAPP_API_TOKEN=$(python -m wsgiapp token)" >> /etc/wsgiapp/env"""
    import secrets
    print(secrets.token_urlsafe(32))  # 32 random bytes: 43 URL-safe characters, nothing to quote


def check(args):
    from wsgiapp import check as diagnose
    try:
        status = diagnose.main(args)
    except BrokenPipeError:  # check | head: stop quietly, and keep the final flush from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)



def serve_metrics(args):
    from wsgiapp import exporter
    exporter.main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m wsgiapp', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    serve_parser = commands.add_parser('serve', help='run the development server')
    serve_parser.add_argument('--host', default='127.0.0.1')
    serve_parser.add_argument('--port', type=int, default=8000)
    serve_parser.set_defaults(run=serve)
    initdb_parser = commands.add_parser('initdb', help='create the vc_admin table if it is missing')
    initdb_parser.add_argument('--sample', action='store_true', help='also add a few sample rows')
    initdb_parser.set_defaults(run=initdb)
    check_parser = commands.add_parser('check', help='diagnose a deployment and name the fixes')
    from wsgiapp.check import add_arguments
    add_arguments(check_parser)
    check_parser.set_defaults(run=check)
    token_parser = commands.add_parser('token', help='print a new random API token for WSGIAPP_API_TOKEN')
    token_parser.set_defaults(run=token)
    metrics_parser = commands.add_parser('metrics', help="serve the app's metrics for Prometheus")
    metrics_parser.add_argument('--listen', default=os.environ.get('WSGIAPP_METRICS_LISTEN', '127.0.0.1:9117'),
                                help='HOST:PORT (WSGIAPP_METRICS_LISTEN; default 127.0.0.1:9117)')
    metrics_parser.set_defaults(run=serve_metrics)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == '__main__':
    main()
