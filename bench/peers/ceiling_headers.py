"""ceiling-headers: the ceiling with the headers wsgiapp sends on `/` (the same names and
values, the per-request ones as constants), to measure what carrying them costs uwsgi and
nginx apart from the code that makes them."""
from bench.peers.ceiling import BODY
from wsgiapp.app import CSP_HEADER, NOSNIFF, VARY, VERSION_HEADER

HEADERS = [NOSNIFF, ('X-Request-ID', '0123456789abcdef0123456789abcdef'), ('Date', 'Sun, 06 Dec 2026 03:14:57 GMT'),
           VERSION_HEADER, ('X-Route', '/'),
           ('Cache-Control', 'public, max-age=0, s-maxage=1, stale-while-revalidate=1, stale-if-error=60'),
           ('ETag', 'W/"0123456789abcdef0123456789abcdef"'), ('Content-Type', 'text/html; charset=utf-8'),
           ('Content-Length', str(len(BODY))), CSP_HEADER, VARY]


def application(environ, start_response):
    start_response('200 OK', HEADERS)
    return [BODY]
