"""The route table: a path and a method lead to a handler, or to 404 / 405."""
import re

from wsgiapp.http import MethodNotAllowed, NotFound

# First path segments that are never names: the app's own routes and what nginx serves.
RESERVED = ('admins', 'api', 'healthz', 'readyz', 'openapi.json', 'static', 'favicon.ico', 'robots.txt')
NAME = '/(?!(?:{})$)([^/]+)'.format('|'.join(map(re.escape, RESERVED)))
ADMIN_ID = r'/api/admins/([0-9]{1,10})'
# The probes say how this process is now: no cache may answer for them.
UNCACHED = frozenset({'/healthz', '/readyz'})


class Route:
    """The handlers of one path, by method. HEAD is answered by the GET handler."""

    def __init__(self, **handlers):
        if 'GET' in handlers:
            handlers.setdefault('HEAD', handlers['GET'])
        self.handlers = handlers
        self.allow = sorted(handlers)


class Router:
    def __init__(self, exact, patterns):
        self.exact = exact                                          # path -> Route
        self.patterns = [(re.compile(p), r) for p, r in patterns]  # tried in order

    def resolve(self, method, path):
        """(handler, captured strings) for this request, or NotFound / MethodNotAllowed."""
        route, args = self.exact.get(path), ()
        if route is None:
            for pattern, candidate in self.patterns:
                match = pattern.fullmatch(path)
                if match:
                    route, args = candidate, match.groups()
                    break
            else:
                raise NotFound(f'nothing is at {path}')
        handler = route.handlers.get(method)
        if handler is None:
            raise MethodNotAllowed(route.allow)
        return handler, args


def build(views):
    return Router(
        {
            '/': Route(GET=views.hello),
            '/admins': Route(GET=views.admins_page),
            '/api/admins': Route(GET=views.list_admins, POST=views.create_admin),
            '/healthz': Route(GET=views.healthz),
            '/readyz': Route(GET=views.readyz),
            '/openapi.json': Route(GET=views.openapi_document),
        },
        [
            (ADMIN_ID, Route(GET=views.get_admin, PATCH=views.update_admin, DELETE=views.delete_admin)),
            (NAME, Route(GET=views.hello)),
        ],
    )


def kind_of(path):
    """How errors on this path are written: 'json', 'text' or 'html'."""
    if path == '/api' or path.startswith('/api/') or path == '/openapi.json':
        return 'json'
    if path in ('/healthz', '/readyz'):
        return 'text'
    return 'html'
