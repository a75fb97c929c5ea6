"""/openapi.json describes the JSON routes exactly as the code behaves: the same paths and
methods, the same limits, and every status the code answers is documented with its shape."""
import json

import jsonschema
import pytest

from tests.helpers.servers import TOKEN
from wsgiapp import views
from wsgiapp.openapi import OPENAPI


def validate(instance, component):
    schema = {'$ref': f'#/components/schemas/{component}', 'components': OPENAPI['components']}
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def documented(method, path, status):
    operation = OPENAPI['paths'][path][method.lower()]
    answer = operation['responses'][str(status)]
    if '$ref' in answer:
        answer = OPENAPI['components']['responses'][answer['$ref'].rsplit('/', 1)[1]]
    return answer


def test_served_document_is_the_module_document(app):
    response = app.get('/openapi.json')
    assert response.headers['Content-Type'] == 'application/json'
    assert response.json == json.loads(json.dumps(OPENAPI))
    assert response.json['openapi'].startswith('3.1')


def test_paths_and_methods_match_the_route_table(app):
    router = app.app.router
    assert set(OPENAPI['paths']) == {'/api/admins', '/api/admins/{id}'}
    collection = router.exact['/api/admins']
    item = next(route for pattern, route in router.patterns if pattern.pattern.startswith('/api/admins/'))
    for path, route in [('/api/admins', collection), ('/api/admins/{id}', item)]:
        methods = {m for m in OPENAPI['paths'][path] if m != 'parameters'}
        assert methods == {m.lower() for m in route.allow if m != 'HEAD'}


def test_limits_match_the_code():
    parameters = {p['name']: p['schema'] for p in OPENAPI['paths']['/api/admins']['get']['parameters']}
    assert (parameters['limit']['minimum'], parameters['limit']['maximum'], parameters['limit']['default']) == \
        (1, views.MAX_LIMIT, views.DEFAULT_LIMIT)
    assert parameters['after']['maximum'] == views.MAX_ID
    schemas = OPENAPI['components']['schemas']
    assert schemas['Name']['maxLength'] == views.FIELD_LIMITS['name']
    assert schemas['Email']['maxLength'] == views.FIELD_LIMITS['email']


@pytest.mark.parametrize('name, valid', [('ok', True), ('张三 🚀', True), (' lead', False), ('trail ', False),
                                         ('tab\there', False), ('', False), ('x' * 65, False)])
def test_name_schema_agrees_with_validation(name, valid):
    try:
        views.validate({'name': name, 'email': 'a@b.c'}, partial=False)
        accepted = True
    except views.UnprocessableEntity:
        accepted = False
    try:
        validate({'name': name, 'email': 'a@b.c'}, 'AdminCreate')
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    assert accepted == schema_ok == valid


def test_every_status_the_code_answers_is_documented_with_its_shape(make_app, app, add):
    taken = add('taken')
    auth = {'Authorization': f'Bearer {TOKEN}'}
    no_writes = make_app(api_token=None)
    body = json.dumps({'name': 'new', 'email': 'a@b.c'})
    cases = [
        (app, 'GET', '/api/admins', '/api/admins', {}, None, 200, 'Page'),
        (app, 'GET', '/api/admins?limit=0', '/api/admins', {}, None, 400, 'Error'),
        (app, 'POST', '/api/admins', '/api/admins', auth, body, 201, 'Admin'),
        (app, 'POST', '/api/admins', '/api/admins', auth, body, 409, 'Error'),
        (app, 'POST', '/api/admins', '/api/admins', {}, body, 401, 'Error'),
        (no_writes, 'POST', '/api/admins', '/api/admins', auth, body, 403, 'Error'),
        (app, 'POST', '/api/admins', '/api/admins', auth, 'x' * 70000, 413, 'Error'),
        (app, 'POST', '/api/admins', '/api/admins', auth, '{', 400, 'Error'),
        (app, 'POST', '/api/admins', '/api/admins', auth, '{"name": 1}', 422, 'Error'),
        (app, 'GET', f'/api/admins/{taken}', '/api/admins/{id}', {}, None, 200, 'Admin'),
        (app, 'GET', '/api/admins/77', '/api/admins/{id}', {}, None, 404, 'Error'),
        (app, 'PATCH', f'/api/admins/{taken}', '/api/admins/{id}', auth, '{"email": "n@e.w"}', 200, 'Admin'),
        (app, 'PATCH', '/api/admins/77', '/api/admins/{id}', auth, '{"email": "n@e.w"}', 404, 'Error'),
        (app, 'PATCH', f'/api/admins/{taken}', '/api/admins/{id}', auth, '{"name": "new"}', 409, 'Error'),
        (app, 'DELETE', '/api/admins/77', '/api/admins/{id}', auth, None, 404, 'Error'),
        (app, 'DELETE', f'/api/admins/{taken}', '/api/admins/{id}', auth, None, 204, None),
    ]
    for client, method, url, path, headers, data, status, component in cases:
        response = client.request(url, method=method, headers=headers, expect_errors=True,
                                  body=data.encode() if data else b'',
                                  content_type='application/json' if data else None)
        assert response.status_int == status, (method, url, response.text)
        answer = documented(method, path, status)
        if component:
            assert answer['content']['application/json']['schema']['$ref'].endswith(component)
            validate(response.json, component)
        for header, spec in answer.get('headers', {}).items():
            if spec.get('description', '').startswith('With read replicas'):
                continue  # there are none here: tests/test_replicas.py sees those headers
            assert header in response.headers, (method, url, header)
    unsupported = app.post('/api/admins', body, headers=auth, content_type='text/plain', expect_errors=True)
    assert unsupported.status_int == 415 and documented('POST', '/api/admins', 415)
