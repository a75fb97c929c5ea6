"""ceiling: the stack's own limit. A bare WSGI callable returning a constant byte string
(the same bytes as wsgiapp's `/`), with nothing computed per request."""
from wsgiapp.pages import HELLO_WORLD_HTML

BODY = HELLO_WORLD_HTML.encode('utf-8')
HEADERS = [('Content-Type', 'text/html; charset=utf-8'), ('Content-Length', str(len(BODY)))]


def application(environ, start_response):
    start_response('200 OK', HEADERS)
    return [BODY]
