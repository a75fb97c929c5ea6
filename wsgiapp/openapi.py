"""The OpenAPI 3.1 description of the JSON routes, served at /openapi.json.
tests/test_openapi.py checks it against the code: routes, methods, statuses, limits."""

_NO_EDGE_SPACE = r'[^\s\x00-\x1f\x7f-\x9f]'
_TEXT = r'[^\x00-\x1f\x7f-\x9f]'


def _ref(name):
    return {'$ref': f'#/components/{name}'}


def _responses(*statuses, **success):
    """The documented answers: the success ones given by keyword, the errors by number."""
    answers = {code.lstrip('_'): spec for code, spec in success.items()}
    for status in statuses:
        answers[str(status)] = _ref(f'responses/E{status}')
    return answers


_ERRORS = {
    400: 'A query parameter is not a decimal integer in range or is repeated; the body is not '
         'valid UTF-8, not JSON, not a JSON object, or shorter than its Content-Length; or the '
         'Idempotency-Key is not 1 to 255 printable ASCII characters.',
    401: 'The Authorization: Bearer token is missing or wrong.',
    403: 'Writes are disabled on this server.',
    404: 'No such admin.',
    405: 'The method is not allowed on this path (see the Allow header).',
    409: 'An admin with this name already exists; or a request with this Idempotency-Key is still '
         'being processed.',
    413: 'The request body is over the size limit (64 KiB by default).',
    415: 'The request body is not application/json in UTF-8.',
    422: 'A field is missing, unknown, of the wrong type, empty, too long or malformed (the '
         'message names the field); or the Idempotency-Key was sent before with another body.',
    429: 'Too many wrong bearer tokens from this address (10 a minute): retry after Retry-After seconds.',
    500: 'An unexpected error; the details are in the server log under the X-Request-ID.',
    503: 'The database is unreachable, timed out or the connection pool is exhausted: retry later.',
}


def _error_response(status, description):
    response = {'description': description,
                'content': {'application/json': {'schema': _ref('schemas/Error')}}}
    if status == 401:
        response['headers'] = {'WWW-Authenticate': {'schema': {'type': 'string'}}}
    if status == 405:
        response['headers'] = {'Allow': {'schema': {'type': 'string'}}}
    if status in (429, 503):
        response['headers'] = {'Retry-After': {'schema': {'type': 'integer'}}}
    return response


_ADMIN = {'description': 'The admin.', 'content': {'application/json': {'schema': _ref('schemas/Admin')}}}
_ID = {'name': 'id', 'in': 'path', 'required': True,
       'schema': {'type': 'integer', 'minimum': 0, 'maximum': 9999999999}}
_WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 429, 503, 500)
# Read your writes, with replicas (docs/replicas.rst): a write answers with a token, a read
# sends it back (header or cookie) and sees that write.
_TOKEN_DOC = ('The consistency token of this client\'s last write, exactly as its answer gave it '
              '(X-Consistency-Token, or the wsgiapp_consistency cookie): the MariaDB GTID position of '
              'that write, GTIDs joined by ".", then "~" and a 22-character base64url signature, such '
              'as 0-1-42~9Vx3nB0aQm7Lq2ZtYc1uRw. With read replicas, the read waits (at most '
              'WSGIAPP_REPLICA_WAIT) until its replica has applied that write, or is answered by the '
              'primary. A token this deployment did not issue (unsigned, altered, signed under another '
              'secret, empty or malformed: any string is accepted) is answered by the primary at once. '
              'Any read that carries one is private (Cache-Control: private, no-store). Without '
              'replicas it changes nothing else.')
_TOKEN_PARAMETERS = [
    {'name': 'X-Consistency-Token', 'in': 'header', 'required': False, 'description': _TOKEN_DOC,
     'schema': {'type': 'string'}},
    {'name': 'wsgiapp_consistency', 'in': 'cookie', 'required': False,
     'description': 'The same token, as the cookie a write sets (for browsers).',
     'schema': {'type': 'string'}},
]
_ISSUED_TOKEN = '^[0-9]+-[0-9]+-[0-9]+([.,][0-9]+-[0-9]+-[0-9]+)*(~[A-Za-z0-9_-]{22})?$'
_WRITTEN = {
    'X-Consistency-Token': {'description': 'With read replicas: the signed GTID position of this write '
                                           '(POSITION~SIGNATURE, or the bare position when the server has no '
                                           'secret), to send back on reads as it is.',
                            'schema': {'type': 'string', 'pattern': _ISSUED_TOKEN}},
    'Set-Cookie': {'description': 'With read replicas: wsgiapp_consistency=TOKEN (HttpOnly, Secure, '
                                  'SameSite=Lax, 60 s).', 'schema': {'type': 'string'}},
}


def _body(schema):
    return {'required': True, 'content': {'application/json': {'schema': _ref(f'schemas/{schema}')}}}


OPENAPI = {
    'openapi': '3.1.0',
    'info': {'title': 'wsgiapp', 'version': '0.1.0',
             'description': 'Admins of vc_admin, as JSON. Writes need a bearer token. Every answer '
                            'says which code made it (X-App-Version).'},
    'paths': {
        '/api/admins': {
            'get': {
                'operationId': 'listAdmins',
                'summary': 'A page of admins ordered by id (keyset pagination)',
                'parameters': [
                    {'name': 'limit', 'in': 'query', 'description': 'Rows per page.',
                     'schema': {'type': 'integer', 'minimum': 1, 'maximum': 100, 'default': 10}},
                    {'name': 'after', 'in': 'query', 'description': 'Only rows with a larger id.',
                     'schema': {'type': 'integer', 'minimum': 0, 'maximum': 4294967295, 'default': 0}},
                    *_TOKEN_PARAMETERS,
                ],
                'responses': _responses(400, 503, 500, _200={
                    'description': 'One page; `next` is null exactly on the last page.',
                    'content': {'application/json': {'schema': _ref('schemas/Page')}}}),
            },
            'post': {
                'operationId': 'createAdmin',
                'summary': 'Add an admin',
                'security': [{'bearer': []}],
                'parameters': [{
                    'name': 'Idempotency-Key', 'in': 'header', 'required': False,
                    'description': 'Makes the request safe to retry (IETF draft "The Idempotency-Key HTTP '
                                   'Header Field"): a retry with the same key and body gets the first '
                                   "answer again (with Idempotent-Replayed: true) and creates no second row; "
                                   'the same key with another body is 422; while the first is running, 409. '
                                   'Keys are remembered for at least 24 hours.',
                    'schema': {'type': 'string', 'minLength': 1, 'maxLength': 255, 'pattern': '^[!-~]+$'}}],
                'requestBody': _body('AdminCreate'),
                'responses': _responses(*_WRITE_ERRORS, 409, _201={
                    **_ADMIN, 'headers': {'Location': {'schema': {'type': 'string'}}, **_WRITTEN}}),
            },
        },
        '/api/admins/{id}': {
            'parameters': [_ID],
            'get': {
                'operationId': 'getAdmin',
                'summary': 'One admin',
                'parameters': _TOKEN_PARAMETERS,
                'responses': _responses(404, 503, 500, _200=_ADMIN),
            },
            'patch': {
                'operationId': 'updateAdmin',
                'summary': 'Change the name, the email or both',
                'security': [{'bearer': []}],
                'requestBody': _body('AdminUpdate'),
                'responses': _responses(*_WRITE_ERRORS, 404, 409, _200={**_ADMIN, 'headers': _WRITTEN}),
            },
            'delete': {
                'operationId': 'deleteAdmin',
                'summary': 'Remove an admin',
                'security': [{'bearer': []}],
                'responses': _responses(401, 403, 404, 429, 503, 500,
                                        _204={'description': 'Deleted.', 'headers': _WRITTEN}),
            },
        },
    },
    'components': {
        'securitySchemes': {'bearer': {'type': 'http', 'scheme': 'bearer'}},
        'schemas': {
            'Admin': {
                'type': 'object',
                'required': ['id', 'name', 'email', 'created_at'],
                'properties': {
                    'id': {'type': 'integer', 'minimum': 1},
                    'name': {'type': 'string', 'minLength': 1, 'maxLength': 64},
                    'email': {'type': 'string', 'maxLength': 254},
                    'created_at': {'type': 'string', 'format': 'date-time',
                                   'description': 'ISO 8601, UTC, with its +00:00 offset.'},
                },
            },
            'AdminCreate': {
                'type': 'object',
                'required': ['name', 'email'],
                'additionalProperties': False,
                'properties': {'name': _ref('schemas/Name'), 'email': _ref('schemas/Email')},
            },
            'AdminUpdate': {
                'type': 'object',
                'minProperties': 1,
                'additionalProperties': False,
                'properties': {'name': _ref('schemas/Name'), 'email': _ref('schemas/Email')},
            },
            'Name': {
                'type': 'string', 'minLength': 1, 'maxLength': 64,
                'description': 'Unique, compared byte for byte; no control characters, '
                               'no leading or trailing whitespace.',
                'pattern': f'^{_NO_EDGE_SPACE}(?:{_TEXT}*{_NO_EDGE_SPACE})?$',
            },
            'Email': {
                'type': 'string', 'minLength': 3, 'maxLength': 254,
                'pattern': r'^[^\s\x00-\x1f\x7f-\x9f]+@[^\s@\x00-\x1f\x7f-\x9f]+$',
            },
            'Page': {
                'type': 'object',
                'required': ['items', 'next'],
                'properties': {
                    'items': {'type': 'array', 'items': _ref('schemas/Admin')},
                    'next': {'type': ['string', 'null'],
                             'description': 'Path and query of the next page; null on the last.'},
                },
            },
            'Error': {
                'type': 'object',
                'required': ['error'],
                'properties': {'error': {
                    'type': 'object',
                    'required': ['status', 'message'],
                    'properties': {'status': {'type': 'integer'}, 'message': {'type': 'string'}},
                }},
            },
        },
        'responses': {f'E{status}': _error_response(status, text) for status, text in _ERRORS.items()},
    },
}
