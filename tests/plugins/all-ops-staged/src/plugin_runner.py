"""Staged test plugin implementing every operation (tests/plugins/README.md).

Every linked and virtual operation logs `op <group>.<operation>` at INFO and
`recv <group>.<operation> <json>` at DEBUG, then acts on the source's
`behavior` parameter (allops.common.act).
"""

import importlib.resources
import logging

from dlpx.virtualization.platform import (Mount, MountSpecification,
                                          OwnershipSpecification, Plugin,
                                          Status)

from allops import common
from allops.common import act, behavior_of, connection, mount, params_dict
from generated.definitions import (RepositoryDefinition, SnapshotDefinition,
                                   SourceConfigDefinition)

# Attaching the handler logs nothing; logging at import time would break
# `dvp build`, whose import check runs without an engine.
common.setup_logging()
logger = logging.getLogger("allops")
# Read through importlib.resources at import: needs the working directory
# and sys.path set up as contract 1.3 says.
BANNER = importlib.resources.files("allops").joinpath(
    "banner.txt").read_text().strip()

plugin = Plugin()

WRONG_TYPE = "not the type the wrapper expects"


def _discovery_behavior(source_connection):
    name = source_connection.environment.name
    return name if name in ("user_error", "runtime_error", "uncaught", "exit",
                            "hang", "crash", "lib_calls",
                            "log_levels") else "ok"


def _snapshot_params(params):
    return None if params is None else params_dict(params)


# ---------------------------------------------------------------- discovery

@plugin.discovery.repository()
def repository_discovery(source_connection):
    logger.info("resource %s", BANNER)
    if act("discovery.repository", _discovery_behavior(source_connection),
           conn=source_connection, checked=True,
           received={"source_connection": connection(source_connection)}):
        return WRONG_TYPE
    env = source_connection.environment
    return [RepositoryDefinition(
        name="repo-" + env.reference,
        toolkit_path=env.host.binary_path,
        user=source_connection.user.name)]


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    if act("discovery.source_config", _discovery_behavior(source_connection),
           conn=source_connection, checked=True,
           received={"source_connection": connection(source_connection),
                     "repository": params_dict(repository)}):
        return WRONG_TYPE
    return [SourceConfigDefinition(
                name="%s-config-%d" % (repository.name, i),
                path="/data/%s/%d" % (repository.name, i),
                origin="discovery")
            for i in (1, 2)]


# ------------------------------------------------------------------- linked

def _staged(staged_source):
    return {
        "guid": staged_source.guid,
        "parameters": params_dict(staged_source.parameters),
        "source_connection": connection(staged_source.source_connection),
        "staged_connection": connection(staged_source.staged_connection),
        "mount": mount(staged_source.mount),
        "mounts": [mount(m) for m in (staged_source.mounts or [])],
    }


def _physical(physical_source):
    return {
        "guid": physical_source.guid,
        "connection": connection(physical_source.connection),
        "target_directory": physical_source.target_directory,
        "parameters": params_dict(physical_source.parameters),
    }


def _linked(op, staged_source, checked=False, **received):
    received["staged_source"] = _staged(staged_source)
    return act("linked." + op, behavior_of(staged_source.parameters),
               conn=staged_source.staged_connection,
               sync_conn=staged_source.source_connection,
               checked=checked, received=received)


def _staged_mount_path(staged_source):
    params = staged_source.parameters
    if params.mount_path:
        return params.mount_path
    if staged_source.mount is not None and staged_source.mount.mount_path:
        return staged_source.mount.mount_path
    return "/mnt/staging/" + staged_source.guid


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(staged_source, repository, source_config,
                        optional_snapshot_parameters):
    _linked("pre_snapshot", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config),
            snapshot_parameters=_snapshot_params(optional_snapshot_parameters))


@plugin.linked.post_snapshot()
def linked_post_snapshot(staged_source, repository, source_config,
                         optional_snapshot_parameters):
    if _linked("post_snapshot", staged_source, checked=True,
               repository=params_dict(repository),
               source_config=params_dict(source_config),
               snapshot_parameters=_snapshot_params(
                   optional_snapshot_parameters)):
        return WRONG_TYPE
    resync = None
    if optional_snapshot_parameters is not None:
        resync = optional_snapshot_parameters.resync
    return SnapshotDefinition(
        operation="linked.post_snapshot",
        guid=staged_source.guid,
        source_config_name=source_config.name,
        repository_name=repository.name,
        mount_path=_staged_mount_path(staged_source),
        resync=resync)


@plugin.linked.start_staging()
def start_staging(staged_source, repository, source_config):
    _linked("start_staging", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config))


@plugin.linked.stop_staging()
def stop_staging(staged_source, repository, source_config):
    _linked("stop_staging", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config))


@plugin.linked.status()
def linked_status(staged_source, repository, source_config):
    if _linked("status", staged_source, checked=True,
               repository=params_dict(repository),
               source_config=params_dict(source_config)):
        return WRONG_TYPE
    return Status.INACTIVE if source_config.running is False else Status.ACTIVE


@plugin.linked.worker()
def linked_worker(staged_source, repository, source_config):
    _linked("worker", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config))


def _ownership(layout):
    if layout is None or layout.owner_uid is None or layout.owner_gid is None:
        return None
    return OwnershipSpecification(layout.owner_uid, layout.owner_gid)


@plugin.linked.mount_specification()
def linked_mount_specification(staged_source, repository):
    if _linked("mount_specification", staged_source, checked=True,
               repository=params_dict(repository)):
        return WRONG_TYPE
    params = staged_source.parameters
    environment = (params.mount_environment
                   or staged_source.staged_connection.environment)
    path = _staged_mount_path(staged_source)
    count = (params.layout.subset_mounts or 0) if params.layout else 0
    if count >= 2:
        mounts = [Mount(environment, "%s/part-%d" % (path, i),
                        "part-%d" % i) for i in range(1, count + 1)]
    else:
        mounts = [Mount(environment, path)]
    return MountSpecification(mounts, _ownership(params.layout))


@plugin.linked.source_size()
def linked_source_size(staged_source, repository, source_config):
    _linked("source_size", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config))
    return (staged_source.parameters.record_size_in_kb or 8) * 1024


@plugin.linked.pre_source_to_physical()
def linked_pre_source_to_physical(staged_source, repository, source_config,
                                  snapshot, physical_source):
    _linked("pre_source_to_physical", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config),
            snapshot=params_dict(snapshot),
            physical_source=_physical(physical_source))


@plugin.linked.source_to_physical()
def linked_source_to_physical(staged_source, repository, source_config,
                              snapshot, physical_source):
    _linked("source_to_physical", staged_source,
            repository=params_dict(repository),
            source_config=params_dict(source_config),
            snapshot=params_dict(snapshot),
            physical_source=_physical(physical_source))


# ------------------------------------------------------------------ virtual

def _virtual_source(virtual_source):
    return {
        "guid": virtual_source.guid,
        "parameters": params_dict(virtual_source.parameters),
        "connection": connection(virtual_source.connection),
        "mounts": [mount(m) for m in (virtual_source.mounts or [])],
    }


def _virtual(op, virtual_source, checked=False, **received):
    received["virtual_source"] = _virtual_source(virtual_source)
    return act("virtual." + op, behavior_of(virtual_source.parameters),
               conn=virtual_source.connection, checked=checked,
               received=received)


def _config_name(virtual_source):
    return virtual_source.parameters.db_name or "vdb-" + virtual_source.guid


@plugin.virtual.configure()
def configure(virtual_source, snapshot, repository):
    if _virtual("configure", virtual_source, checked=True,
                repository=params_dict(repository),
                snapshot=params_dict(snapshot)):
        return WRONG_TYPE
    return SourceConfigDefinition(
        name=_config_name(virtual_source),
        path=virtual_source.parameters.mount_path,
        origin="configure:%s" % (snapshot.source_config_name,))


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    _virtual("unconfigure", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    if _virtual("reconfigure", virtual_source, checked=True,
                repository=params_dict(repository),
                source_config=params_dict(source_config),
                snapshot=params_dict(snapshot)):
        return WRONG_TYPE
    return SourceConfigDefinition(
        name=source_config.name,
        path=virtual_source.parameters.mount_path,
        origin="reconfigure:%s" % (snapshot.source_config_name,),
        running=True)


@plugin.virtual.cleanup()
def cleanup(virtual_source, repository, source_config):
    _virtual("cleanup", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))


@plugin.virtual.start()
def start(virtual_source, repository, source_config):
    _virtual("start", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))


@plugin.virtual.stop()
def stop(virtual_source, repository, source_config):
    _virtual("stop", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))


@plugin.virtual.pre_snapshot()
def virtual_pre_snapshot(virtual_source, repository, source_config):
    _virtual("pre_snapshot", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    if _virtual("post_snapshot", virtual_source, checked=True,
                repository=params_dict(repository),
                source_config=params_dict(source_config)):
        return WRONG_TYPE
    return SnapshotDefinition(
        operation="virtual.post_snapshot",
        guid=virtual_source.guid,
        source_config_name=source_config.name,
        repository_name=repository.name,
        mount_path=virtual_source.parameters.mount_path)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    if _virtual("status", virtual_source, checked=True,
                repository=params_dict(repository),
                source_config=params_dict(source_config)):
        return WRONG_TYPE
    return Status.INACTIVE if source_config.running is False else Status.ACTIVE


@plugin.virtual.initialize()
def initialize(virtual_source, repository):
    if _virtual("initialize", virtual_source, checked=True,
                repository=params_dict(repository)):
        return WRONG_TYPE
    return SourceConfigDefinition(
        name=_config_name(virtual_source),
        path=virtual_source.parameters.mount_path,
        origin="initialize")


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    if _virtual("mount_specification", virtual_source, checked=True,
                repository=params_dict(repository)):
        return WRONG_TYPE
    params = virtual_source.parameters
    environment = (params.mount_environment
                   or virtual_source.connection.environment)
    mounts = [Mount(environment, params.mount_path)]
    count = (params.layout.subset_mounts or 0) if params.layout else 0
    for i in range(1, count + 1):
        mounts.append(Mount(environment, "%s/part-%d" % (params.mount_path, i),
                            "part-%d" % i))
    return MountSpecification(mounts, _ownership(params.layout))


@plugin.virtual.source_size()
def virtual_source_size(virtual_source, repository, source_config):
    _virtual("source_size", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config))
    return (virtual_source.parameters.record_size_in_kb or 8) * 2048


@plugin.virtual.pre_source_to_physical()
def virtual_pre_source_to_physical(virtual_source, repository, source_config,
                                   snapshot, physical_source):
    _virtual("pre_source_to_physical", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config),
             snapshot=params_dict(snapshot),
             physical_source=_physical(physical_source))


@plugin.virtual.source_to_physical()
def virtual_source_to_physical(virtual_source, repository, source_config,
                               snapshot, physical_source):
    _virtual("source_to_physical", virtual_source,
             repository=params_dict(repository),
             source_config=params_dict(source_config),
             snapshot=params_dict(snapshot),
             physical_source=_physical(physical_source))


# ------------------------------------------------------------------ upgrade
# Migration ids must be unique across all object types.  Each migration
# appends its (normalised) id to the object's `migrations` list, so the
# result shows which migrations ran and in which order.

def _migrated(data, migration_id):
    data = dict(data)
    data["migrations"] = list(data.get("migrations") or []) + [migration_id]
    logger.info("migrate %s", migration_id)
    return data


@plugin.upgrade.repository("1.2")
def repository_1_2(old_repository):
    return _migrated(old_repository, "1.2")


@plugin.upgrade.repository("1.10")
def repository_1_10(old_repository):
    return _migrated(old_repository, "1.10")


@plugin.upgrade.source_config("1.3")
def source_config_1_3(old_source_config):
    return _migrated(old_source_config, "1.3")


@plugin.upgrade.source_config("1.11")
def source_config_1_11(old_source_config):
    return _migrated(old_source_config, "1.11")


@plugin.upgrade.linked_source("1.4")
def linked_source_1_4(old_linked_source):
    return _migrated(old_linked_source, "1.4")


@plugin.upgrade.linked_source("1.12")
def linked_source_1_12(old_linked_source):
    return _migrated(old_linked_source, "1.12")


@plugin.upgrade.virtual_source("1.5")
def virtual_source_1_5(old_virtual_source):
    return _migrated(old_virtual_source, "1.5")


@plugin.upgrade.virtual_source("1.13.0")
def virtual_source_1_13(old_virtual_source):
    return _migrated(old_virtual_source, "1.13")


@plugin.upgrade.snapshot("1.6")
def snapshot_1_6(old_snapshot):
    return _migrated(old_snapshot, "1.6")


@plugin.upgrade.snapshot("2021.01.2")
def snapshot_2021_1_2(old_snapshot):
    return _migrated(old_snapshot, "2021.1.2")
