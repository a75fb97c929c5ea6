"""The launcher: private servers for `make run`, the tests and the benchmark.

One module per server kind (mariadb, uwsgi, nginx), the certificates (tls), what they
share (process), and the compositions: single.py is one host (`make run`)."""
