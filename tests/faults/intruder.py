"""What a host on the app network gets from an app host's uwsgi port, by the way it talks.

    python -m tests.faults.intruder ADDRESS:PORT... --marker PATH --certs DIR

test_cluster_faults.py runs it inside a namespace of its own on the cluster's bridge. Each
target is sent uwsgi packets: in clear text, and over TLS with no certificate, with a
client certificate of another CA (other.pem), with an app host's own certificate
(app.pem: the link's CA, but made for a server), and with the edge's (edge.pem: the
control, which must be answered). Prints JSON: {target: {attempt: what came back}}."""
import argparse
import json
import socket
import ssl
from pathlib import Path

from tests.helpers.web import uwsgi_get


def request(path, **more):
    return uwsgi_get(path, **{'SERVER_NAME': 'app', 'SERVER_PORT': '3031', 'REMOTE_ADDR': '10.0.0.1',
                              'HTTP_HOST': 'app', **more})


def client_context(cert_dir=None, name=None):
    """TLS as an intruder does it: any server will do; a client certificate if it has one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if name:
        context.load_cert_chain(Path(cert_dir) / f'{name}.pem', Path(cert_dir) / f'{name}.key')
    return context


def ask(address, port, packet, context=None, timeout=5):
    """The answer's first line, or what stopped it: 'closed' (no byte back) or the error."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            connection = context.wrap_socket(raw) if context else raw
            connection.sendall(packet)
            answer = connection.recv(4096)
            first_line = answer.split(b'\r\n')[0].decode(errors='replace')
            return f'answered: {first_line}' if answer else 'closed'
    except (OSError, ssl.SSLError) as error:
        return f'refused: {type(error).__name__}: {error}'


def attempts(address, port, marker, certs):
    run = request('/', UWSGI_FILE=f'exec://touch {marker}')
    return {
        'clear text, UWSGI_FILE=exec://': ask(address, port, run),
        'clear text, GET /healthz': ask(address, port, request('/healthz')),
        'TLS, no certificate': ask(address, port, run, client_context()),
        "TLS, another CA's client certificate": ask(address, port, run, client_context(certs, 'other')),
        "TLS, an app host's server certificate": ask(address, port, run, client_context(certs, 'app')),
        "TLS, the edge's certificate (control)": ask(address, port, request('/healthz'), client_context(certs, 'edge')),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('targets', nargs='+')
    parser.add_argument('--marker', required=True)
    parser.add_argument('--certs', required=True)
    args = parser.parse_args(argv)
    results = {}
    for target in args.targets:
        address, port = target.rsplit(':', 1)
        results[target] = attempts(address, int(port), args.marker, args.certs)
    print(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
