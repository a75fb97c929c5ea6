"""wsgiapp.routing without a server: the route table, 404 and 405 with Allow, and which kind
of error body each path gets."""
from types import SimpleNamespace

import pytest

from wsgiapp import routing
from wsgiapp.http import MethodNotAllowed, NotFound
from wsgiapp.routing import Route, Router

HANDLERS = ('hello', 'admins_page', 'list_admins', 'create_admin', 'healthz', 'readyz', 'openapi_document',
            'get_admin', 'update_admin', 'delete_admin')


def handler(name):
    def handle(request, *args):
        return name, args
    handle.__name__ = name
    return handle


@pytest.fixture
def router():
    return routing.build(SimpleNamespace(**{name: handler(name) for name in HANDLERS}))


def resolved(router, method, path):
    found, args = router.resolve(method, path)
    return found.__name__, args


def test_head_is_answered_by_get():
    get = handler('get')
    route = Route(GET=get)
    assert route.handlers == {'GET': get, 'HEAD': get}
    assert route.allow == ['GET', 'HEAD']


def test_a_head_handler_of_its_own_is_kept_and_no_get_means_no_head():
    get, head, post = handler('get'), handler('head'), handler('post')
    assert Route(GET=get, HEAD=head).handlers == {'GET': get, 'HEAD': head}
    route = Route(POST=post, DELETE=post)
    assert route.handlers == {'POST': post, 'DELETE': post}
    assert route.allow == ['DELETE', 'POST']


@pytest.mark.parametrize('method, path, name, args', [
    ('GET', '/', 'hello', ()),
    ('HEAD', '/', 'hello', ()),
    ('GET', '/admins', 'admins_page', ()),
    ('GET', '/api/admins', 'list_admins', ()),
    ('POST', '/api/admins', 'create_admin', ()),
    ('HEAD', '/api/admins', 'list_admins', ()),
    ('GET', '/healthz', 'healthz', ()),
    ('GET', '/readyz', 'readyz', ()),
    ('GET', '/openapi.json', 'openapi_document', ()),
    ('GET', '/api/admins/7', 'get_admin', ('7',)),
    ('HEAD', '/api/admins/7', 'get_admin', ('7',)),
    ('PATCH', '/api/admins/0042', 'update_admin', ('0042',)),
    ('DELETE', '/api/admins/4294967295', 'delete_admin', ('4294967295',)),
    ('GET', '/api/admins/1234567890', 'get_admin', ('1234567890',)),
    ('GET', '/fulin', 'hello', ('fulin',)),
    ('HEAD', '/张三', 'hello', ('张三',)),
    ('GET', '/a b', 'hello', ('a b',)),
    ('GET', '/apis', 'hello', ('apis',)),
    ('GET', '/staticx', 'hello', ('staticx',)),
    ('GET', '/admin', 'hello', ('admin',)),
    ('GET', '/Admins', 'hello', ('Admins',)),
    ('GET', '/openapiXjson', 'hello', ('openapiXjson',)),  # the '.' is literal
    ('GET', '/robots.txt.bak', 'hello', ('robots.txt.bak',)),
])
def test_the_route_table(router, method, path, name, args):
    assert resolved(router, method, path) == (name, args)


@pytest.mark.parametrize('path', ['/api', '/static', '/favicon.ico', '/robots.txt', '/a/b', '/name/', '//', '',
                                  '/api/admins/', '/api/admins/x', '/api/admins/-1', '/api/admins/12345678901',
                                  '/api/admins/1/2', '/admins/1', '/healthz/', '/api/nothing'])
def test_unknown_paths_are_404(router, path):
    with pytest.raises(NotFound) as caught:
        router.resolve('GET', path)
    assert caught.value.message == f'nothing is at {path}'
    assert caught.value.status == 404


@pytest.mark.parametrize('method, path, allow', [
    ('POST', '/', 'GET, HEAD'),
    ('DELETE', '/someone', 'GET, HEAD'),
    ('PUT', '/admins', 'GET, HEAD'),
    ('PUT', '/api/admins', 'GET, HEAD, POST'),
    ('DELETE', '/api/admins', 'GET, HEAD, POST'),
    ('POST', '/api/admins/1', 'DELETE, GET, HEAD, PATCH'),
    ('POST', '/healthz', 'GET, HEAD'),
    ('POST', '/readyz', 'GET, HEAD'),
    ('OPTIONS', '/openapi.json', 'GET, HEAD'),
    ('get', '/', 'GET, HEAD'),  # methods are case-sensitive (RFC 9110 9.1)
])
def test_wrong_method_is_405_with_allow(router, method, path, allow):
    with pytest.raises(MethodNotAllowed) as caught:
        router.resolve(method, path)
    assert caught.value.headers == [('Allow', allow)]


def test_exact_paths_win_and_patterns_are_tried_in_order():
    first, second, exact = handler('first'), handler('second'), handler('exact')
    router = Router({'/x/1': Route(GET=exact)},
                    [(r'/x/([0-9])', '/x/{digit}', Route(GET=first)), (r'/x/(.)', '/x/{any}', Route(GET=second))])
    assert resolved(router, 'GET', '/x/1') == ('exact', ())
    assert resolved(router, 'GET', '/x/2') == ('first', ('2',))
    assert resolved(router, 'GET', '/x/y') == ('second', ('y',))
    with pytest.raises(NotFound):
        router.resolve('GET', '/x/22')  # the whole path must match
    with pytest.raises(NotFound):
        router.resolve('GET', '/y/x/2')
    with pytest.raises(MethodNotAllowed):  # the first matching pattern decides, even without the method
        Router({}, [(r'/(.)', '/{a}', Route(POST=first)), (r'/(.)', '/{b}', Route(GET=second))]).resolve('GET', '/a')


@pytest.mark.parametrize('path, kind', [
    ('/api', 'json'), ('/api/', 'json'), ('/api/admins', 'json'), ('/api/admins/1', 'json'), ('/api/x/y', 'json'),
    ('/openapi.json', 'json'),
    ('/healthz', 'text'), ('/readyz', 'text'),
    ('/', 'html'), ('', 'html'), ('/admins', 'html'), ('/apis', 'html'), ('/api.json', 'html'), ('/x/api/', 'html'),
    ('/healthz/', 'html'), ('/readyz/x', 'html'), ('/openapi.json/', 'html'), ('/fulin', 'html'), ('/API/x', 'html'),
])
def test_kind_of_says_how_errors_are_written(path, kind):
    assert routing.kind_of(path) == kind


@pytest.mark.parametrize('path, label', [
    ('/', '/'), ('/api/admins', '/api/admins'), ('/api/admins/42', '/api/admins/{id}'),
    ('/api/admins/7', '/api/admins/{id}'), ('/alice', '/{name}'), ('/bob', '/{name}'),
])
def test_each_route_has_a_label_that_never_holds_the_raw_path(router, path, label):
    route, _ = router.match(path)
    assert route.label == label


def test_metrics_is_never_a_name_page(router):
    with pytest.raises(NotFound):
        router.match('/metrics')
