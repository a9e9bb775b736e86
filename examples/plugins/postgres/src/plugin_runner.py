"""The PostgreSQL plugin: a STAGED plugin whose dSource is a streaming
standby of the source cluster on the staging host, and whose VDBs are
running primaries of their own on target hosts.

See README.md for the schemas, what each operation does and what the hosts
need.
"""

import logging
import posixpath

from dlpx.virtualization import libs
from dlpx.virtualization.platform import (Mount, MountSpecification, Plugin,
                                          Status)
from dlpx.virtualization.platform.exceptions import UserError

from generated.definitions import (RepositoryDefinition, SnapshotDefinition,
                                   SourceConfigDefinition)
from pgplugin import hosts, shell


def _attach_platform_handler():
    """All logging goes to the engine. Nothing is logged at import time:
    `dvp build` imports this module without an engine."""
    root = logging.getLogger()
    if not any(isinstance(h, libs.PlatformHandler) for h in root.handlers):
        handler = libs.PlatformHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)


_attach_platform_handler()
logger = logging.getLogger("postgres")

plugin = Plugin()

# Local connections are trusted only through the plugin's private (0700)
# socket directory, which nobody but the environment user can reach.
LOCAL_TRUST = "local all all trust"
# How long a standby may take to catch up with the source before a snapshot.
CATCH_UP_TIMEOUT = 300
# How long replay may take to reach its pause point.
PAUSE_TIMEOUT = 30


# ---------------------------------------------------------------- discovery

@plugin.discovery.repository()
def repository_discovery(source_connection):
    out = hosts.run(source_connection, shell.discover_installations()).stdout
    repos = []
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        bin_dir, version = parts
        repos.append(RepositoryDefinition(
            name="PostgreSQL %s (%s)" % (version, bin_dir),
            bin_dir=bin_dir, version=version))
    if not repos:
        logger.info("no PostgreSQL installation on %s",
                    hosts.label(source_connection))
    return repos


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    """Clusters are added by hand: host, port (and data directory)."""
    return []


# ------------------------------------------------------------------ helpers

def _guid_dir(connection, guid):
    base = hosts.runtime_dir(connection, guid)
    return base, "%s/run" % base


def _require_binaries(connection, bin_dir):
    if not hosts.yes(connection, "[ -x %s/pg_ctl ] && echo yes || echo no"
                     % shell.q(bin_dir)):
        raise UserError(
            "PostgreSQL is not installed at %s on %s." % (
                bin_dir, hosts.label(connection)),
            "Install the same PostgreSQL major version there as on the "
            "source (the same binary directory), then try again.")


def _settings(port, socket_dir, listen, extra=()):
    settings = [
        ("port", port),
        ("listen_addresses", listen),
        ("unix_socket_directories", socket_dir),
        # One syncfs per file system instead of an fsync per file when a
        # copy starts after a crash (every snapshot is one).
        ("recovery_init_sync_method", "syncfs"),
    ]
    settings.extend(extra)
    return settings


def _trust_local(connection, data_dir):
    """Puts LOCAL_TRUST first in the cluster's pg_hba.conf (once)."""
    hba = "%s/pg_hba.conf" % data_dir
    hosts.check(
        connection,
        "f=%s; if ! head -n 1 \"$f\" | grep -qx %s; then "
        "{ echo %s; cat \"$f\"; } > \"$f.new\" && mv \"$f.new\" \"$f\"; fi"
        % (shell.q(hba), shell.q(LOCAL_TRUST), shell.q(LOCAL_TRUST)),
        "Preparing %s" % hba, "Check that %s is writable." % hba)


def _start(connection, bin_dir, data_dir, run_dir, port, role=None):
    hosts.check(connection, shell.start(bin_dir, data_dir,
                                        "%s/server.log" % run_dir),
                "Starting PostgreSQL in %s" % data_dir,
                "Read the server log above; fix what it says and try again.")
    if not hosts.wait_until(
            lambda: hosts.yes(connection, shell.is_ready(bin_dir, run_dir,
                                                          port, role)), 60):
        raise UserError(
            "PostgreSQL in %s started but does not accept connections."
            % data_dir, "Read %s/server.log on %s." % (
                run_dir, hosts.label(connection)))


def _stop(connection, bin_dir, data_dir):
    hosts.check(connection, shell.stop(bin_dir, data_dir),
                "Stopping PostgreSQL in %s" % data_dir,
                "Stop it by hand (pg_ctl stop -m immediate) and try again.")


def _own(connection, data_dir):
    """Makes the environment user own the copy: PostgreSQL refuses a data
    directory of another user. Through the engine's mount the engine
    itself performs the change."""
    hosts.run(connection, "chown -R \"$(id -u):$(id -g)\" %s 2>/dev/null; "
              "chmod 700 %s" % (shell.q(data_dir), shell.q(data_dir)))
    if not hosts.yes(connection, "[ \"$(stat -c %%u %s)\" = \"$(id -u)\" ] "
                     "&& echo yes || echo no" % shell.q(data_dir)):
        raise UserError(
            "%s on %s belongs to another user, and PostgreSQL runs only as "
            "the owner of its data directory." % (
                data_dir, hosts.label(connection)),
            "Use the same OS user for this environment as for the staging "
            "environment, or give the environment user ownership.")


# ------------------------------------------------------------------- linked

class _Staging(object):
    def __init__(self, staged_source, repository):
        self.conn = staged_source.staged_connection
        self.params = staged_source.parameters
        self.bin = repository.bin_dir
        base, self.run = _guid_dir(self.conn, staged_source.guid)
        mount = staged_source.mount
        self.mount = (mount.mount_path if mount is not None and
                      mount.mount_path else "%s/mnt" % base)
        self.data = "%s/data" % self.mount
        self.port = self.params.staging_port
        self.passfile = "%s/pgpass" % self.run
        # When replay was paused for the snapshot, in nanoseconds.
        self.paused_at = "%s/paused-at" % self.run

    def ready(self):
        return hosts.yes(self.conn, shell.is_ready(
            self.bin, self.run, self.port, self.params.replication_user))

    def start(self):
        _start(self.conn, self.bin, self.data, self.run, self.port,
               self.params.replication_user)

    def query(self, sql, role=None):
        return hosts.query(self.conn, self.bin, self.run, self.port, sql,
                           role or self.params.replication_user)

    def superuser(self):
        return self.query("SELECT rolname FROM pg_roles WHERE oid = 10")

    def su_query(self, sql):
        return self.query(sql, self.superuser())

    def is_cluster(self):
        return hosts.yes(self.conn, shell.is_cluster(self.data))


def _replication_action(source_config, user):
    return ("On the source, check that role %s exists with REPLICATION and "
            "this password, and that pg_hba.conf has a `host replication %s "
            "<staging address>/32 scram-sha-256` (or md5) line; then reload "
            "the source and resync." % (user, user))


def _base_backup(st, source_config):
    logger.info("base backup of %s:%s into %s", source_config.host,
                source_config.port, st.data)
    if st.is_cluster():
        _stop(st.conn, st.bin, st.data)
    hosts.check(st.conn, shell.prepare_dirs(st.run, st.mount),
                "Creating %s" % st.run, "Check the scratch directory.")
    hosts.check(
        st.conn,
        shell.write_passfile(st.passfile, source_config.host,
                             source_config.port, st.params.replication_user),
        "Writing the replication password file", "Check %s." % st.run,
        variables={"PGPASSWORD_NEW": st.params.replication_password})
    result = hosts.run(st.conn, shell.base_backup(
        st.bin, st.data, source_config.host, source_config.port,
        st.params.replication_user, st.passfile))
    if result.exit_code != 0:
        raise UserError(
            "The source %s:%s refused the base backup: %s" % (
                source_config.host, source_config.port,
                hosts.last_lines(result.stderr)),
            _replication_action(source_config, st.params.replication_user),
            result.stderr)
    _trust_local(st.conn, st.data)
    conninfo = ("host=%s port=%s user=%s passfile=%s application_name=%s"
                % (source_config.host, source_config.port,
                   st.params.replication_user, st.passfile, "doppel"))
    hosts.check(st.conn, shell.write_auto_conf(st.data, _settings(
        st.port, st.run, "", [("primary_conninfo", conninfo),
                              ("hot_standby", "on")])),
        "Configuring the standby", "Check %s." % st.data)
    hosts.check(st.conn, shell.mark_standby(st.data),
                "Marking the standby", "Check %s." % st.data)


def _resume(st):
    if st.ready():
        try:
            st.su_query("SELECT pg_wal_replay_resume()")
        except UserError as err:
            # Not paused (or not a standby any more): nothing to resume.
            logger.debug("resume: %s", err.message)


def _consistent_point(st, source_config):
    """Brings the standby to a durable point that a copy can start from
    quickly: the source checkpoints (when the replication role may), the
    standby replays up to there and makes a restartpoint, then replay
    pauses until post_snapshot."""
    target = None
    remote = lambda sql: hosts.run(st.conn, shell.psql_remote(
        st.bin, source_config.host, source_config.port,
        st.params.replication_user, st.passfile, sql))
    checkpoint = remote("CHECKPOINT")
    if checkpoint.exit_code != 0:
        logger.info("the source did not take a checkpoint for us (grant "
                    "pg_checkpoint to %s for faster VDB starts): %s",
                    st.params.replication_user,
                    hosts.last_lines(checkpoint.stderr))
    lsn = remote("SELECT pg_current_wal_lsn()")
    if lsn.exit_code == 0 and (lsn.stdout or "").strip():
        target = lsn.stdout.strip().splitlines()[-1]
    if target:
        sql = ("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % target)
        caught_up = lambda: st.su_query(sql) == "t"
    else:
        caught_up = lambda: st.su_query(
            "SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()"
        ) == "t"
    if not hosts.wait_until(caught_up, CATCH_UP_TIMEOUT, 0.1):
        raise UserError(
            "The standby on %s did not catch up with the source within %d s."
            % (hosts.label(st.conn), CATCH_UP_TIMEOUT),
            "Check the network between staging and source and the standby's "
            "log in %s; then sync again." % st.run)
    st.su_query("CHECKPOINT")
    st.su_query("SELECT pg_wal_replay_pause()")
    paused = lambda: st.su_query(
        "SELECT pg_get_wal_replay_pause_state() = 'paused' OR "
        "pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()") == "t"
    if not hosts.wait_until(paused, PAUSE_TIMEOUT, 0.05):
        raise UserError("Replay on the standby did not pause.",
                        "Read the standby's log in %s." % st.run)
    hosts.run(st.conn, "date +%%s%%N > %s" % shell.q(st.paused_at))


@plugin.linked.mount_specification()
def linked_mount_specification(staged_source, repository):
    base, _ = _guid_dir(staged_source.staged_connection, staged_source.guid)
    path = "%s/mnt" % base
    logger.info("staging mount for %s: %s", staged_source.guid, path)
    return MountSpecification(
        [Mount(staged_source.staged_connection.environment, path)])


@plugin.linked.start_staging()
def start_staging(staged_source, repository, source_config):
    st = _Staging(staged_source, repository)
    if st.is_cluster():
        st.start()
        _resume(st)
    else:
        logger.info("no standby in %s yet: the first sync makes it", st.data)


@plugin.linked.stop_staging()
def stop_staging(staged_source, repository, source_config):
    st = _Staging(staged_source, repository)
    if st.is_cluster():
        _stop(st.conn, st.bin, st.data)


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(staged_source, repository, source_config,
                        optional_snapshot_parameters):
    st = _Staging(staged_source, repository)
    _require_binaries(st.conn, st.bin)
    resync = (optional_snapshot_parameters is not None and
              optional_snapshot_parameters.resync)
    if resync or not st.is_cluster():
        _base_backup(st, source_config)
    else:
        hosts.check(st.conn, shell.prepare_dirs(st.run),
                    "Creating %s" % st.run, "Check the scratch directory.")
    st.start()
    _resume(st)
    _consistent_point(st, source_config)


@plugin.linked.post_snapshot()
def linked_post_snapshot(staged_source, repository, source_config,
                         optional_snapshot_parameters):
    st = _Staging(staged_source, repository)
    try:
        su = st.superuser()
        snap = SnapshotDefinition(
            wal_lsn=st.query("SELECT pg_last_wal_replay_lsn()", su),
            timeline=int(st.query(
                "SELECT timeline_id FROM pg_control_checkpoint()", su)),
            version=st.query("SHOW server_version", su).split()[0],
            taken_at=st.query("SELECT to_char(now() AT TIME ZONE 'UTC', "
                              "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", su),
            superuser=su)
    finally:
        _resume(st)
        out = hosts.run(st.conn, "f=%s; [ -f \"$f\" ] && echo $(( ($(date "
                        "+%%s%%N) - $(cat \"$f\")) / 1000000 )); rm -f \"$f\""
                        % shell.q(st.paused_at)).stdout.strip()
        if out.isdigit():
            logger.info("replay was paused for %s ms", out)
    logger.info("snapshot of %s:%s at %s", source_config.host,
                source_config.port, snap.wal_lsn)
    return snap


@plugin.linked.status()
def linked_status(staged_source, repository, source_config):
    return Status.ACTIVE if _Staging(staged_source,
                                     repository).ready() else Status.INACTIVE


# ------------------------------------------------------------------ virtual

class _Vdb(object):
    def __init__(self, virtual_source, repository):
        self.conn = virtual_source.connection
        self.params = virtual_source.parameters
        self.bin = repository.bin_dir
        self.base, self.run = _guid_dir(self.conn, virtual_source.guid)
        self.mount = self.params.mount_path
        self.data = "%s/data" % self.mount
        self.port = self.params.port
        self.listen = self.params.listen_addresses or "*"

    def ready(self, role):
        return hosts.yes(self.conn, shell.is_ready(self.bin, self.run,
                                                   self.port, role))

    def config(self, superuser, name=None):
        host = self.listen if self.listen not in ("*", "") else (
            self.conn.environment.host.name or "localhost")
        return SourceConfigDefinition(
            name=name or posixpath.basename(self.mount.rstrip("/")) or
            "vdb", host=host.split(",")[0].strip(), port=self.port,
            data_dir=self.data, superuser=superuser)


def _open_vdb(vdb, superuser):
    """Turns the copy in the VDB's data directory into a running primary
    of its own on the VDB's port."""
    _require_binaries(vdb.conn, vdb.bin)
    if not hosts.yes(vdb.conn, shell.is_cluster(vdb.data)):
        raise UserError(
            "%s on %s is not a PostgreSQL data directory." % (
                vdb.data, hosts.label(vdb.conn)),
            "Provision from a snapshot of a PostgreSQL dSource or VDB.")
    if hosts.yes(vdb.conn, shell.port_in_use(vdb.port)):
        raise UserError(
            "Port %d is already in use on %s." % (
                vdb.port, hosts.label(vdb.conn)),
            "Choose a free port for the VDB (parameter port).")
    hosts.check(vdb.conn, shell.prepare_dirs(vdb.run),
                "Creating %s" % vdb.run, "Check the scratch directory.")
    _own(vdb.conn, vdb.data)
    hosts.check(vdb.conn, shell.make_primary(vdb.data),
                "Preparing %s" % vdb.data, "Check %s." % vdb.data)
    _trust_local(vdb.conn, vdb.data)
    hosts.check(vdb.conn, shell.write_auto_conf(vdb.data, _settings(
        vdb.port, vdb.run, vdb.listen)), "Configuring the VDB",
        "Check %s." % vdb.data)
    _start(vdb.conn, vdb.bin, vdb.data, vdb.run, vdb.port, superuser)
    role = hosts.query(vdb.conn, vdb.bin, vdb.run, vdb.port,
                       "SELECT rolname FROM pg_roles WHERE oid = 10",
                       superuser) if superuser else None
    logger.info("VDB on %s:%d is up", hosts.label(vdb.conn), vdb.port)
    return role


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    return MountSpecification([Mount(virtual_source.connection.environment,
                                     virtual_source.parameters.mount_path)])


@plugin.virtual.configure()
def configure(virtual_source, snapshot, repository):
    vdb = _Vdb(virtual_source, repository)
    role = _open_vdb(vdb, getattr(snapshot, "superuser", None))
    return vdb.config(role)


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    vdb = _Vdb(virtual_source, repository)
    su = getattr(snapshot, "superuser", None) or source_config.superuser
    role = _open_vdb(vdb, su)
    return vdb.config(role, source_config.name)


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    _stop(vdb.conn, vdb.bin, vdb.data)


@plugin.virtual.cleanup()
def cleanup(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    hosts.run(vdb.conn, shell.remove(vdb.base))


@plugin.virtual.start()
def start(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    _start(vdb.conn, vdb.bin, vdb.data, vdb.run, vdb.port,
           source_config.superuser)


@plugin.virtual.stop()
def stop(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    _stop(vdb.conn, vdb.bin, vdb.data)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    return (Status.ACTIVE if vdb.ready(source_config.superuser)
            else Status.INACTIVE)


@plugin.virtual.pre_snapshot()
def virtual_pre_snapshot(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    if vdb.ready(source_config.superuser):
        hosts.query(vdb.conn, vdb.bin, vdb.run, vdb.port, "CHECKPOINT",
                    source_config.superuser)


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    vdb = _Vdb(virtual_source, repository)
    su = source_config.superuser
    q = lambda sql: hosts.query(vdb.conn, vdb.bin, vdb.run, vdb.port, sql,
                                su)
    return SnapshotDefinition(
        wal_lsn=q("SELECT pg_current_wal_lsn()"),
        timeline=int(q("SELECT timeline_id FROM pg_control_checkpoint()")),
        version=q("SHOW server_version").split()[0],
        taken_at=q("SELECT to_char(now() AT TIME ZONE 'UTC', "
                   "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
        superuser=su)


# --------------------------------------------------------------------- V2P

def _export_check(physical_source):
    target = physical_source.target_directory
    if hosts.yes(physical_source.connection,
                 "[ -e %s ] && [ -n \"$(ls -A %s 2>/dev/null)\" ] && echo yes "
                 "|| echo no" % (shell.q(target), shell.q(target))):
        raise UserError("%s is not empty." % target,
                        "Export into an empty or new directory.")


def _export_finish(physical_source, snapshot):
    """The copied files become a cluster that a plain `pg_ctl start` runs:
    no standby marker, no stale pid file, a socket directory of its own."""
    conn = physical_source.connection
    target = physical_source.target_directory.rstrip("/")
    data = "%s/data" % target
    if not hosts.yes(conn, shell.is_cluster(data)):
        raise UserError("The export holds no data directory at %s." % data,
                        "Check the free space on the host and export again.")
    port = getattr(physical_source.parameters, "port", None)
    hosts.check(conn, shell.make_primary(data) + " && chmod 700 %s"
                % shell.q(data), "Preparing %s" % data, "Check %s." % data)
    listen = getattr(physical_source.parameters, "listen_addresses", None)
    settings = [("unix_socket_directories", target),
                ("listen_addresses", listen or "*")]
    if port:
        settings.insert(0, ("port", port))
    hosts.check(conn, shell.write_auto_conf(data, settings),
                "Configuring %s" % data, "Check %s." % data)
    logger.info("exported a PostgreSQL %s cluster to %s",
                getattr(snapshot, "version", "?"), data)


@plugin.linked.pre_source_to_physical()
def linked_pre_source_to_physical(staged_source, repository, source_config,
                                  snapshot, physical_source):
    _export_check(physical_source)


@plugin.linked.source_to_physical()
def linked_source_to_physical(staged_source, repository, source_config,
                              snapshot, physical_source):
    _export_finish(physical_source, snapshot)


@plugin.virtual.pre_source_to_physical()
def virtual_pre_source_to_physical(virtual_source, repository,
                                   source_config, snapshot, physical_source):
    _export_check(physical_source)


@plugin.virtual.source_to_physical()
def virtual_source_to_physical(virtual_source, repository, source_config,
                               snapshot, physical_source):
    _export_finish(physical_source, snapshot)
