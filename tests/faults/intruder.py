"""What a host on the app network gets from an app host's link port (its nginx, which
terminates the edge's mutual TLS and passes to uwsgi's unix socket), by the way it talks.

    python -m tests.faults.intruder ADDRESS:PORT... --marker PATH --certs DIR

test_cluster_faults.py runs it inside a namespace of its own on the cluster's bridge. Each
target is sent, in clear text, a uwsgi packet asking to run a command (UWSGI_FILE=exec://)
and an HTTP GET; over TLS, the same with no certificate, with a client certificate of
another CA (other.pem), with an app host's own certificate (app.pem: the link's CA, but made
for a server), and an HTTP GET with the edge's (edge.pem: the control, which must be
answered). Prints JSON: {target: {attempt: what came back}}, where what came back is
'refused: ...' (the connection or the handshake failed, or nginx answered 400 itself:
a plain request on its TLS port, no certificate, a certificate it does not accept, or a
request that is not HTTP) or 'answered: STATUS LINE'. Whether any of them reached uwsgi is
the test's to check (uwsgi's request counters)."""
import argparse
import json
import socket
import ssl
from pathlib import Path

from tests.helpers.web import uwsgi_get


def uwsgi_request(path, **more):
    """A uwsgi packet, what the old link spoke: with UWSGI_FILE, a uWSGI 2.0 worker runs code."""
    return uwsgi_get(path, **{'SERVER_NAME': 'app', 'SERVER_PORT': '3031', 'REMOTE_ADDR': '10.0.0.1',
                              'HTTP_HOST': 'app', **more})


def request(path, request_id='intruder'):
    """An HTTP/1.1 request, what the link speaks now, with the headers the edge sets."""
    return (f'GET {path} HTTP/1.1\r\nHost: app.wsgiapp.internal\r\nX-Request-ID: {request_id}\r\n'
            'X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n').encode()


# nginx's own 400s: it answered without passing anything on (the body names the reason).
NGINX_REFUSALS = ('No required SSL certificate was sent', 'The SSL certificate error',
                  'The plain HTTP request was sent to HTTPS port', '400 Bad Request')


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
            answer = b''
            while len(answer) < 65536:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk  # nginx closes after its answer (Connection: close, or a 400)
            first_line = answer.split(b'\r\n')[0].decode(errors='replace')
            if not answer:
                return 'refused: closed without an answer'
            if first_line.startswith('HTTP/1.1 400'):
                reason = next((r for r in NGINX_REFUSALS if r.encode() in answer), 'a 400')
                return f'refused: nginx 400, {reason}'
            return f'answered: {first_line}'
    except (OSError, ssl.SSLError) as error:
        return f'refused: {type(error).__name__}: {error}'


def attempts(address, port, marker, certs):
    run = uwsgi_request('/', UWSGI_FILE=f'exec://touch {marker}')
    get = request('/healthz')
    found = {
        'clear text, UWSGI_FILE=exec://': ask(address, port, run),
        'clear text, GET /healthz': ask(address, port, get),
    }
    for label, name in (('no certificate', None), ("another CA's client certificate", 'other'),
                        ("an app host's server certificate", 'app')):
        found[f'TLS, {label}, UWSGI_FILE=exec://'] = ask(address, port, run, client_context(certs, name))
        found[f'TLS, {label}, GET /healthz'] = ask(address, port, get, client_context(certs, name))
    found["TLS, the edge's certificate (control)"] = ask(address, port, request('/healthz', 'control'),
                                                        client_context(certs, 'edge'))
    return found


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
