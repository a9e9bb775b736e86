"""Bash snippets the plugin runs on hosts.

Pure functions of their arguments: every value that comes from a user or
the engine is quoted with shlex.quote, and secrets never appear here: they
travel as run_bash variables (environment variables on the host).
"""

import shlex

# How long a server may take to accept connections after pg_ctl start, and
# to stop. Crash recovery of a big cluster can take a while.
START_TIMEOUT = 600
STOP_TIMEOUT = 120


def q(value):
    return shlex.quote(str(value))


def discover_installations():
    """Prints `<binDir> <version>` per PostgreSQL installation found:
    Debian's and PGDG's layouts, /usr/local/pgsql, and pg_config on PATH."""
    return "\n".join([
        "cands='/usr/lib/postgresql/*/bin /usr/pgsql-*/bin "
        "/usr/local/pgsql/bin /opt/postgresql/*/bin'",
        "if command -v pg_config >/dev/null 2>&1; then",
        '  cands="$cands $(pg_config --bindir 2>/dev/null)"',
        "fi",
        "for d in $cands; do",
        '  [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ] || continue',
        '  real=$(cd "$d" && pwd -P) || continue',
        '  v=$("$real/postgres" --version 2>/dev/null | '
        "awk '{print $NF}')",
        '  [ -n "$v" ] && echo "$real $v"',
        "done | sort -u",
    ])


def prepare_dirs(*paths):
    """Creates private directories (0700)."""
    return "umask 077; mkdir -p -- %s && chmod 700 -- %s" % (
        " ".join(q(p) for p in paths), " ".join(q(p) for p in paths))


def write_passfile(path, host, port, user):
    """A libpq password file holding $PGPASSWORD_NEW for the replication
    connection; the password comes in through the environment."""
    line = "%s:%s:*:%s:" % (host, port, user)
    return "\n".join([
        "umask 077",
        # Escape what the pgpass format treats specially.
        "pw=$(printf '%s' \"$PGPASSWORD_NEW\" | sed -e 's/\\\\/\\\\\\\\/g' "
        "-e 's/:/\\\\:/g')",
        "printf '%%s%%s\\n' %s \"$pw\" > %s" % (q(line), q(path)),
        "chmod 600 %s" % q(path),
    ])


def base_backup(bin_dir, data_dir, host, port, user, passfile):
    """Replaces `data_dir` with a fresh base backup of the source
    (streaming the WAL it needs); exits 2 when replication is refused."""
    return "\n".join([
        "set -o pipefail",
        "rm -rf -- %s" % q(data_dir),
        "out=$(PGPASSFILE=%s PGCONNECT_TIMEOUT=30 %s/pg_basebackup -h %s -p %s "
        "-U %s -D %s -X stream -c fast -w 2>&1)" % (
            q(passfile), q(bin_dir), q(host), q(port), q(user), q(data_dir)),
        "rc=$?",
        'if [ $rc -ne 0 ]; then printf "%s\\n" "$out" >&2; rm -rf -- ' +
        q(data_dir) + "; exit 2; fi",
        "chmod 700 %s" % q(data_dir),
        "rm -f -- %s/postgresql.auto.conf" % q(data_dir),
    ])


def write_auto_conf(data_dir, settings):
    """Writes postgresql.auto.conf with these settings (a list of
    (name, value) pairs; values are quoted for the config file)."""
    lines = ["# Written by the Doppel PostgreSQL plugin."]
    for name, value in settings:
        lines.append("%s = '%s'" % (name, str(value).replace("'", "''")))
    body = "\n".join(lines) + "\n"
    return "umask 077; printf '%%s' %s > %s/postgresql.auto.conf" % (
        q(body), q(data_dir))


def mark_standby(data_dir):
    return "touch %s/standby.signal" % q(data_dir)


def make_primary(data_dir):
    """What a copy of a running standby must lose to start as a primary of
    its own: the standby marker and the dead server's pid file."""
    return "rm -f -- %s" % " ".join(
        q("%s/%s" % (data_dir, f))
        for f in ("standby.signal", "recovery.signal", "postmaster.pid"))


def is_cluster(data_dir):
    """Prints `yes` when data_dir holds a PostgreSQL cluster."""
    return ("if [ -f %s/PG_VERSION ] && [ -d %s/global ]; then echo yes; "
            "else echo no; fi" % (q(data_dir), q(data_dir)))


def start(bin_dir, data_dir, log_file):
    """Starts the server and waits until it accepts connections. The log
    goes outside the data directory, so snapshots do not carry it."""
    return "\n".join([
        "if %s/pg_ctl -D %s status >/dev/null 2>&1; then exit 0; fi" % (
            q(bin_dir), q(data_dir)),
        "%s/pg_ctl -D %s -l %s -w -t %d start >/dev/null 2>&1" % (
            q(bin_dir), q(data_dir), q(log_file), START_TIMEOUT),
        "rc=$?",
        "if [ $rc -ne 0 ]; then tail -n 30 %s >&2; exit $rc; fi" % q(log_file),
    ])


def stop(bin_dir, data_dir):
    """Stops the server if it runs (fast shutdown: sessions are cut, data
    is checkpointed)."""
    return "\n".join([
        "if [ ! -f %s/postmaster.pid ]; then exit 0; fi" % q(data_dir),
        "if ! %s/pg_ctl -D %s status >/dev/null 2>&1; then exit 0; fi" % (
            q(bin_dir), q(data_dir)),
        "%s/pg_ctl -D %s -m fast -w -t %d stop" % (
            q(bin_dir), q(data_dir), STOP_TIMEOUT),
    ])


def is_ready(bin_dir, socket_dir, port, role=None):
    """Prints `yes` when the server accepts connections. pg_isready really
    connects: naming a role and a database that exist keeps the server's
    log free of "does not exist" lines."""
    who = " -U %s" % q(role) if role else ""
    return ("if %s/pg_isready -q -h %s -p %s -d template1%s; then echo yes; "
            "else echo no; fi" % (q(bin_dir), q(socket_dir), q(port), who))


def port_in_use(port):
    """Prints `yes` when something listens on TCP `port`."""
    return ("if (ss -Htln 2>/dev/null || netstat -tln 2>/dev/null) | "
            "awk '{print $4}' | grep -Eq '[:.]%d$'; then echo yes; "
            "else echo no; fi" % int(port))


def psql(bin_dir, socket_dir, port, sql, database="postgres"):
    """Runs SQL as the OS user's namesake superuser over the Unix socket;
    prints unaligned, tuples-only rows."""
    return "%s/psql -X -q -A -t -v ON_ERROR_STOP=1 -h %s -p %s -d %s -c %s" % (
        q(bin_dir), q(socket_dir), q(port), q(database), q(sql))


def psql_remote(bin_dir, host, port, user, passfile, sql):
    """Runs SQL on the source as the replication user (for a checkpoint)."""
    return ("PGPASSFILE=%s PGCONNECT_TIMEOUT=30 %s/psql -X -q -A -t -w "
            "-v ON_ERROR_STOP=1 -h %s -p %s -U %s -d postgres -c %s" % (
                q(passfile), q(bin_dir), q(host), q(port), q(user), q(sql)))


def remove(*paths):
    return "rm -rf -- %s" % " ".join(q(p) for p in paths)
