"""The route table: a path and a method lead to a handler, or to 404 / 405."""
import re

from wsgiapp.http import MethodNotAllowed, NotFound

# First path segments that are never names: the app's own routes and what nginx serves.
RESERVED = ('admins', 'api', 'healthz', 'readyz', 'metrics', 'openapi.json', 'static', 'favicon.ico', 'robots.txt')
NAME = '/(?!(?:{})$)([^/]+)'.format('|'.join(map(re.escape, RESERVED)))
ADMIN_ID = r'/api/admins/([0-9]{1,10})'
# The probes say how this process is now: no cache may answer for them.
UNCACHED = frozenset({'/healthz', '/readyz'})


# The route label of a request that matched no route (or was refused before routing).
UNMATCHED = 'unmatched'


class Route:
    """The handlers of one path, by method. HEAD is answered by the GET handler. Its label
    (the path, or the pattern's name for it) is what metrics count it under: never the raw
    path, whose values are unbounded."""

    def __init__(self, **handlers):
        if 'GET' in handlers:
            handlers.setdefault('HEAD', handlers['GET'])
        self.handlers = handlers
        self.allow = sorted(handlers)
        self.label = UNMATCHED

    def handler(self, method):
        handler = self.handlers.get(method)
        if handler is None:
            raise MethodNotAllowed(self.allow)
        return handler


class Router:
    def __init__(self, exact, patterns):
        self.exact = exact  # path -> Route
        for path, route in exact.items():
            route.label = path
        self.patterns = []  # (compiled pattern, Route), tried in order
        for pattern, label, route in patterns:
            route.label = label
            self.patterns.append((re.compile(pattern), route))

    def match(self, path):
        """(Route, captured strings) for this path, or NotFound."""
        route = self.exact.get(path)
        if route is not None:
            return route, ()
        for pattern, route in self.patterns:
            match = pattern.fullmatch(path)
            if match:
                return route, match.groups()
        raise NotFound(f'nothing is at {path}')

    def resolve(self, method, path):
        """(handler, captured strings) for this request, or NotFound / MethodNotAllowed."""
        route, args = self.match(path)
        return route.handler(method), args


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
            (ADMIN_ID, '/api/admins/{id}',
             Route(GET=views.get_admin, PATCH=views.update_admin, DELETE=views.delete_admin)),
            (NAME, '/{name}', Route(GET=views.hello)),
        ],
    )


def kind_of(path):
    """How errors on this path are written: 'json', 'text' or 'html'."""
    if path == '/api' or path.startswith('/api/') or path == '/openapi.json':
        return 'json'
    if path in ('/healthz', '/readyz'):
        return 'text'
    return 'html'
