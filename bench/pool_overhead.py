"""CPU per listing query: mysqlclient alone, wsgiapp's pool, and DBUtils' PooledDB and
PersistentDB (when installed: pip install DBUtils). This is the measurement behind the
README's "Why not DBUtils".

    python -m bench.pool_overhead [--runs 20000]

Each variant runs the listing query over TCP with a password, on one thread, and is timed
with time.process_time, so the database's own work is not counted, only the client's.
"""
import argparse
import shutil
import statistics
import time
import uuid

import MySQLdb

from launcher.mariadb import MariaDB
from launcher.process import ROOT
from wsgiapp import admins, config, db, schema
from wsgiapp.pool import connect_kwargs


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench.pool_overhead', description=__doc__)
    parser.add_argument('--runs', type=int, default=20000)
    args = parser.parse_args(argv)
    from launcher.process import free_port
    server = MariaDB(ROOT / 'var' / f'pool-{uuid.uuid4().hex[:8]}', port=free_port())
    server.start()
    try:
        schema.initdb(config.from_environ({'DATABASE_URL': server.admin_url()}), sample=True)
        settings = config.from_environ({'DATABASE_URL': server.url(tcp=True)})
        kwargs = connect_kwargs(settings)
        query, params = admins.LIST_PAGE, (0, 11)
        raw = MySQLdb.connect(**kwargs)

        def bare():
            cursor = raw.cursor()
            cursor.execute(query, params)
            return cursor.fetchall()

        database = admins.Admins(db.Database(settings))
        variants = {'mysqlclient alone': bare, 'wsgiapp Pool': lambda: database.list_admins(*params)}
        try:
            from dbutils.persistent_db import PersistentDB
            from dbutils.pooled_db import PooledDB
        except ImportError:
            print('DBUtils is not installed: pip install DBUtils to compare with it')
        else:
            pooled = PooledDB(MySQLdb, maxcached=8, maxconnections=8, blocking=True, reset=False,
                              ping=0, **kwargs)
            persistent = PersistentDB(MySQLdb, closeable=False, ping=0, **kwargs)

            def through(pool):
                def run():
                    con = pool.connection()
                    cursor = con.cursor()
                    cursor.execute(query, params)
                    rows = cursor.fetchall()
                    cursor.close()
                    con.close()
                    return rows
                return run
            variants['DBUtils PooledDB'] = through(pooled)
            variants['DBUtils PersistentDB'] = through(persistent)
        spent = {name: [] for name in variants}
        for round_number in (1, 2, 3):  # variants interleaved, so drift hits them all alike
            for name, run in variants.items():
                run()
                started = time.process_time()
                for _ in range(args.runs):
                    run()
                spent[name].append((time.process_time() - started) / args.runs * 1e6)
                print(f'round {round_number}  {name:22} {spent[name][-1]:6.1f} µs CPU per query')
        for name, samples in spent.items():
            print(f'median   {name:22} {statistics.median(samples):6.1f} µs CPU per query')
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


if __name__ == '__main__':
    main()
