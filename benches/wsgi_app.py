"""The WSGI twin of vigil's demo routes used by `cargo bench --bench compare` and BENCHMARKS.md.

Run it with gunicorn, e.g.:

    gunicorn --chdir benches -b 127.0.0.1:8000 -w 2 -k gthread --threads 32 wsgi_app:app

Routes: `GET /` answers "hello"; `GET /block?ms=N` sleeps N ms (default 20) then answers.
"""

import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        body = b"hello"
    elif path == "/block":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            ms = int(query.get("ms", ["20"])[0])
        except ValueError:
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", "27")])
            return [b"ms must be a whole number\r\n"]
        time.sleep(ms / 1000.0)
        body = ("blocked %d ms" % ms).encode()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
