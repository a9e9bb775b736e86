"""The directory-tree plugin: a STAGED plugin whose dataset is a directory
on a Unix host.

A sync mirrors the source directory onto the staging mount with rsync over
SSH (run on the staging host); a virtual copy is that tree mounted on a
target host. See README.md for the schemas and each operation.
"""

import logging

from dlpx.virtualization import libs
from dlpx.virtualization.libs.exceptions import LibraryError
from dlpx.virtualization.platform import (Mount, MountSpecification, Plugin,
                                          Status)
from dlpx.virtualization.platform.exceptions import UserError

from dirtree import hosts, shell
from generated.definitions import (RepositoryDefinition, SnapshotDefinition,
                                   SourceConfigDefinition)


def _attach_platform_handler():
    """Send all logging to the engine's plugin log. Attaching logs nothing:
    `dvp build` imports this module without an engine, so nothing may be
    logged at import time."""
    root = logging.getLogger()
    if not any(isinstance(h, libs.PlatformHandler) for h in root.handlers):
        handler = libs.PlatformHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)


_attach_platform_handler()
logger = logging.getLogger("directory")

plugin = Plugin()

DEFAULT_SSH_PORT = 22
# Used when the staging host has no scratch path.
FALLBACK_STAGING_BASE = "/var/tmp"


# ---------------------------------------------------------------- discovery

@plugin.discovery.repository()
def repository_discovery(source_connection):
    """One repository per host: any Unix host can hold directory trees."""
    label = hosts.host_label(source_connection)
    try:
        if not hosts.has_rsync(source_connection):
            logger.warning(
                "rsync is not installed on %s: it can hold virtual copies, "
                "but it cannot be a source or staging host of the directory "
                "plugin until rsync is installed", label)
    except LibraryError as err:
        logger.warning("could not check for rsync on %s: %s", label,
                       err.message)
    return [RepositoryDefinition(name="directory tree on %s" % label)]


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    """Nothing to find: users add the directories they want by hand."""
    return []


# ------------------------------------------------------------------- linked

def _staging_path(staged_source):
    """Where the dSource's storage is mounted on the staging host."""
    host = staged_source.staged_connection.environment.host
    base = (host.scratch_path or FALLBACK_STAGING_BASE).rstrip("/")
    return "%s/doppel-staging/%s" % (base, staged_source.guid)


def _staged_mount_path(staged_source):
    """The path the engine mounted, else the one we asked for."""
    mount = staged_source.mount
    if mount is not None and mount.mount_path:
        return mount.mount_path
    return _staging_path(staged_source)


def _check_login(value, field):
    # The schema's pattern (which the generated class enforces) already
    # forbids this; kept in case the schema is loosened: a leading dash
    # would turn the user or host into an option of rsync or ssh.
    if not value or value.startswith("-"):
        raise UserError(
            "The linked source parameter %s is %r." % (field, value),
            "Set %s to a host name or user name (not empty, not starting "
            "with '-')." % field)
    return value


def _snapshot(connection, source_path, counted_path):
    files, size, taken_at = hosts.count_files(connection, counted_path)
    logger.info("snapshot of %s: %d files, %d bytes", source_path, files,
                size)
    return SnapshotDefinition(source_path=source_path, file_count=files,
                              total_bytes=size, taken_at=taken_at)


@plugin.linked.mount_specification()
def linked_mount_specification(staged_source, repository):
    path = _staging_path(staged_source)
    logger.info("staging mount for %s: %s", staged_source.guid, path)
    return MountSpecification(
        [Mount(staged_source.staged_connection.environment, path)])


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(staged_source, repository, source_config,
                        optional_snapshot_parameters):
    params = staged_source.parameters
    user = _check_login(params.source_user, "sourceUser")
    host = _check_login(params.source_host, "sourceHost")
    port = params.ssh_port or DEFAULT_SSH_PORT
    if optional_snapshot_parameters is None:
        logger.info("sync of %s (policy)", source_config.path)
    elif optional_snapshot_parameters.resync:
        logger.info("resync of %s: every sync mirrors the whole tree, so "
                    "this is an ordinary sync", source_config.path)
    else:
        logger.info("sync of %s", source_config.path)
    hosts.pull(staged_source.staged_connection, user, host, port,
               source_config.path, _staged_mount_path(staged_source))


@plugin.linked.post_snapshot()
def linked_post_snapshot(staged_source, repository, source_config,
                         optional_snapshot_parameters):
    return _snapshot(staged_source.staged_connection, source_config.path,
                     _staged_mount_path(staged_source))


@plugin.linked.status()
def linked_status(staged_source, repository, source_config):
    path = _staged_mount_path(staged_source)
    if hosts.is_directory(staged_source.staged_connection, path):
        return Status.ACTIVE
    logger.info("staging directory %s is missing", path)
    return Status.INACTIVE


# ------------------------------------------------------------------ virtual

def _vdb_config(virtual_source, name=None):
    path = virtual_source.parameters.mount_path
    name = name or shell.basename(path) or "vdb-%s" % virtual_source.guid
    return SourceConfigDefinition(name=name, path=path)


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    path = virtual_source.parameters.mount_path
    logger.info("virtual copy %s mounts at %s", virtual_source.guid, path)
    return MountSpecification(
        [Mount(virtual_source.connection.environment, path)])


@plugin.virtual.configure()
def configure(virtual_source, snapshot, repository):
    # The files are already in place: nothing to change, just describe them.
    config = _vdb_config(virtual_source)
    logger.info("virtual copy of %s at %s", snapshot.source_path,
                config.path)
    return config


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    return _vdb_config(virtual_source, source_config.name)


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    logger.info("virtual copy at %s released", source_config.path)


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    path = virtual_source.parameters.mount_path
    return _snapshot(virtual_source.connection, path, path)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    path = virtual_source.parameters.mount_path
    if hosts.is_directory(virtual_source.connection, path):
        return Status.ACTIVE
    logger.info("%s is not a directory on %s", path,
                hosts.host_label(virtual_source.connection))
    return Status.INACTIVE


# ---------------------------------------------------------------------- V2P

# dvp 3.x, which builds this plugin for PYTHON27 (with the schema's
# virtualToPhysicalDefinition left out), has no V2P operations: they are
# defined only where the SDK has them.
if hasattr(plugin.linked, "source_to_physical"):
    def _export_check(physical_source):
        hosts.check_export_target(physical_source.connection,
                                  physical_source.target_directory)


    def _export_verify(physical_source, snapshot):
        """After the engine copied the snapshot's files: count them."""
        target = physical_source.target_directory
        files, size, _ = hosts.count_files(physical_source.connection, target)
        logger.info("exported %d files (%d bytes) to %s on %s", files, size,
                    target, hosts.host_label(physical_source.connection))
        expected = getattr(snapshot, "file_count", None)
        if expected is not None and files != expected:
            raise UserError(
                "%s holds %d files, but the snapshot has %d."
                % (target, files, expected),
                "Check the free space and permissions on %s, then export "
                "again into an empty directory." % target)


    @plugin.linked.pre_source_to_physical()
    def linked_pre_source_to_physical(staged_source, repository, source_config,
                                      snapshot, physical_source):
        _export_check(physical_source)


    @plugin.linked.source_to_physical()
    def linked_source_to_physical(staged_source, repository, source_config,
                                  snapshot, physical_source):
        _export_verify(physical_source, snapshot)


    @plugin.virtual.pre_source_to_physical()
    def virtual_pre_source_to_physical(virtual_source, repository,
                                       source_config, snapshot, physical_source):
        _export_check(physical_source)


    @plugin.virtual.source_to_physical()
    def virtual_source_to_physical(virtual_source, repository, source_config,
                                   snapshot, physical_source):
        _export_verify(physical_source, snapshot)
