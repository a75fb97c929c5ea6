"""What the test modules share, one helper per mechanism (conftest.py files hold fixtures only):

- web: requests to a stack or a cluster (request, call, api), uwsgi's own protocol
  (uwsgi_packet, ask_socket) and its stats socket (served_requests, settled_requests);
- servers: where a test's servers live (new_base), the suite's API token, and an
  administrator's session (admin_session);
- procs: process groups, uwsgi's workers and a process's capabilities (launcher.procs, psutil);
- systemd: the unit's [Service] settings and the environment it gives uwsgi (its
  EnvironmentFile= read by wsgiapp.envfile.read_env_file), and a READY=1 listener that also
  knows who sent it;
- load: the fault suite's steady load, its per-scenario report, the edge's access log, and
  writers that must not lose or double a write;
- fleet: booted hosts over SSH (a playbook run and its recap, a host's command, the single
  server the playbook makes);

Modules import what they need from here (never from a conftest or another test module)."""
