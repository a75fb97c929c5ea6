"""MariaDB replication for the cluster: a primary with its binary log, and replicas that
follow it by GTID (`CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`), each seeded from the
primary with mariadb-dump, MariaDB's own tool, at a consistent GTID position."""
import subprocess

from launcher.mariadb import APP_DATABASE, LOCAL_ONLY, MariaDB
from launcher.process import binary, free_port, say, secret_file
from launcher.wait import wait_for

REPLICATION_USER = 'replication'
# Both roles keep a binary log with every change they apply (log_slave_updates), so a replica
# can be promoted; GTID strict mode refuses a transaction out of order rather than diverge.
# Every commit is on disk, in the table space and in the binary log, before it is
# acknowledged (innodb_flush_log_at_trx_commit=1 is in MariaDB.command()).
COMMON = ['--log-bin=mariadb-bin', '--binlog-format=ROW', '--sync-binlog=1', '--log-slave-updates',
          '--gtid-strict-mode=1',
          # A replica notices a vanished primary within 4 s (heartbeats every 2 s), and tries
          # to reconnect every second (MASTER_CONNECT_RETRY below).
          '--slave-net-timeout=4']
PRIMARY_ARGS = COMMON
REPLICA_ARGS = [*COMMON, '--read-only=1', '--relay-log=relay-bin']
# A replica's application user reads, and may see how far behind it is (SHOW SLAVE STATUS).
REPLICA_GRANTS = (f'SELECT ON {APP_DATABASE}.*', 'SLAVE MONITOR ON *.*')


def replication_password(primary):
    return secret_file(primary.base / 'replication-password')


def allow_replicas(primary, hosts):
    """The user replicas connect as, on the primary only: REPLICATION SLAVE and nothing else,
    from `hosts` (the replicas' addresses; a string is one) and no other: an account of an
    earlier layout (a whole subnet, a retired replica) is dropped. Over TLS only when the
    primary has it (REQUIRE SSL)."""
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    existing = primary.sql(('SELECT host FROM mysql.user WHERE user = %s', (REPLICATION_USER,)))
    require = ' REQUIRE SSL' if primary.authority else ''
    statements = [LOCAL_ONLY, *(('DROP USER %s@%s', (REPLICATION_USER, host))
                                for (host,) in existing if host not in hosts)]
    for host in hosts:
        statements += [('CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s',
                        (REPLICATION_USER, host, replication_password(primary))),
                       (f'ALTER USER %s@%s{require}', (REPLICATION_USER, host)),
                       ('GRANT REPLICATION SLAVE ON *.* TO %s@%s', (REPLICATION_USER, host))]
    primary.sql(*statements)


def tls_options(primary):
    """CHANGE MASTER TO's TLS options: with a primary that has TLS, encrypted and verified
    (the chain to its CA and its name, MASTER_SSL_VERIFY_SERVER_CERT), else none."""
    if not primary.authority:
        return '', ()
    return (', MASTER_SSL = 1, MASTER_SSL_CA = %s, MASTER_SSL_VERIFY_SERVER_CERT = 1',
            (str(primary.authority.cert),))


def follow(primary, replica):
    """Make `replica` follow `primary`: once, a copy of the application's database at a GTID
    position (mariadb-dump --single-transaction --gtid --master-data), then replication from
    that position on. Idempotent: a replica that already follows is only started."""
    tls, tls_args = tls_options(primary)
    if replica.sql('SHOW SLAVE STATUS'):
        # The link's TLS as it is now (a replica of an earlier layout may follow in clear text).
        if tls:
            replica.sql('STOP SLAVE', ('CHANGE MASTER TO ' + tls.lstrip(', '), tls_args))
        replica.sql('START SLAVE')
        return
    say(f'seeding the replica {replica.address} from the primary {primary.address} (mariadb-dump)')
    dump = subprocess.Popen(
        [binary('mariadb-dump'), f'--socket={primary.socket}', f'--user={primary.admin_user}',
         '--single-transaction', '--gtid', '--master-data=1', '--databases', APP_DATABASE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The copy is the replica's own starting point, not a change of its own: no binary log.
    load = subprocess.run(
        [binary('mariadb'), f'--socket={replica.socket}', f'--user={replica.admin_user}',
         f'--init-command={LOCAL_ONLY}'],
        stdin=dump.stdout, capture_output=True, text=True)
    dump.stdout.close()
    dumped = dump.wait()
    if dumped != 0 or load.returncode != 0:
        raise RuntimeError(f'seeding the replica failed: {dump.stderr.read().decode()}{load.stderr}')
    replica.sql(('CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, '
                 'MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1' + tls,
                 (primary.address, primary.port, REPLICATION_USER, replication_password(primary), *tls_args)),
                'START SLAVE')


def caught_up(primary, replica, seconds=60):
    """Wait until the replica has applied everything the primary has logged; either may be
    starting again meanwhile. Else TimedOut (a RuntimeError and an AssertionError) with the
    last positions of both."""
    seen = {}

    def same_position():
        seen['replica'] = replica.sql('SELECT @@gtid_slave_pos')[0][0]
        seen['primary'] = primary.sql('SELECT @@gtid_binlog_pos')[0][0]
        return seen['replica'] == seen['primary']
    wait_for(same_position, seconds, f'the replica {replica.address}:{replica.port} did not catch up',
             detail=lambda: f'GTID positions: {seen}')


def local_pair(base):
    """A primary and a replica following it, both on 127.0.0.1 (free ports), under `base`,
    with the schema: what the tests and the benchmark use. (primary, replica), started;
    the caller stops them."""
    from wsgiapp import config, schema
    primary = MariaDB(base / 'primary', port=free_port(), extra_args=PRIMARY_ARGS)
    replica = MariaDB(base / 'replica', port=free_port(), server_id=2, extra_args=REPLICA_ARGS,
                      app_grants=REPLICA_GRANTS)
    try:
        primary.start()
        replica.start()
        schema.initdb(config.from_environ({'DATABASE_URL': primary.admin_url()}))
        allow_replicas(primary, '127.0.0.1')
        follow(primary, replica)
    except BaseException:
        replica.stop()
        primary.stop()
        raise
    return primary, replica
