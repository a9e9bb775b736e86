# -*- coding: utf-8 -*-
"""PYTHON27 staged test plugin (tests/plugins/README.md, py27-staged).

Valid Python 2.7 only in the ways dvp 3.1.0 needs: built with the real SDK,
run by the engine's worker on CPython 2.7.
"""

import json
import logging
import os
import signal

from dlpx.virtualization import libs
from dlpx.virtualization.platform import (Mount, MountSpecification,
                                          OwnershipSpecification, Plugin,
                                          Status)
from dlpx.virtualization.platform.exceptions import UserError

from generated.definitions import (RepositoryDefinition, SnapshotDefinition,
                                   SourceConfigDefinition)

logging.getLogger().addHandler(libs.PlatformHandler())
logging.getLogger().setLevel(logging.DEBUG)
logger = logging.getLogger("py27")

plugin = Plugin()


def _connection(conn):
    """A RemoteConnection as the recv line shows it (references and names)."""
    env = conn.environment
    return {"environment": env.reference, "environment_name": env.name,
            "host": env.host.reference, "binary_path": env.host.binary_path,
            "scratch_path": env.host.scratch_path,
            "user": conn.user.reference, "user_name": conn.user.name}


def _mount(m):
    return {"environment": m.remote_environment.reference,
            "mount_path": m.mount_path, "shared_path": m.shared_path}


def _plain(obj):
    """A plugin object (generated class) as its camelCase dict."""
    return None if obj is None else obj.to_dict()


def _staged(staged_source):
    # dvp 3.x hands over the single staged mount only: no `mounts`.
    return {"guid": staged_source.guid,
            "parameters": _plain(staged_source.parameters),
            "source_connection": _connection(staged_source.source_connection),
            "staged_connection": _connection(staged_source.staged_connection),
            "mount": _mount(staged_source.mount)}


def _virtual(virtual_source):
    return {"guid": virtual_source.guid,
            "parameters": _plain(virtual_source.parameters),
            "connection": _connection(virtual_source.connection),
            "mounts": [_mount(m) for m in virtual_source.mounts]}


def act(op, params, **received):
    """Logs the operation and what it received, then does what the
    `behavior` parameter says."""
    logger.info("op %s", op)
    logger.debug("recv %s %s", op, json.dumps(
        dict((k, _plain(v) if hasattr(v, "to_dict") else v)
             for k, v in received.items()), sort_keys=True))
    behavior = getattr(params, "behavior", None) or "ok"
    if behavior == "user_error":
        raise UserError(u"requested user error: donn\u00e9es \u00e9chou\u00e9es",
                        u"Set behavior to ok.", u"d\u00e9tails")
    if behavior == "uncaught":
        raise ValueError("boom")
    if behavior == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return behavior


def linked(op, staged_source, **received):
    received["staged_source"] = _staged(staged_source)
    return act("linked." + op, staged_source.parameters, **received)


def virtual(op, virtual_source, **received):
    received["virtual_source"] = _virtual(virtual_source)
    return act("virtual." + op, virtual_source.parameters, **received)


def _status(source_config):
    return Status.INACTIVE if source_config.running is False else \
        Status.ACTIVE


def jq(connection):
    """What the engine's DLPX_BIN_JQ does with a JSON document."""
    res = libs.run_bash(connection,
                        'printf \'{"a":[1,2]}\' | "$DLPX_BIN_JQ" -c .a')
    logger.info("jq exit=%d stdout=%s", res.exit_code, res.stdout.strip())


@plugin.discovery.repository()
def repository_discovery(source_connection):
    act("discovery.repository", None,
        source_connection=_connection(source_connection))
    return [RepositoryDefinition(
        name="py27-repo-" + source_connection.environment.reference)]


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    act("discovery.source_config", None,
        source_connection=_connection(source_connection),
        repository=repository)
    return [SourceConfigDefinition(name=repository.name + "-config")]


def _path(staged_source):
    return staged_source.parameters.mount_path or \
        "/mnt/staging/" + staged_source.guid


@plugin.linked.mount_specification()
def linked_mount_specification(staged_source, repository):
    linked("mount_specification", staged_source, repository=repository)
    return MountSpecification(
        [Mount(staged_source.staged_connection.environment,
               _path(staged_source))])


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(staged_source, repository, source_config,
                        optional_snapshot_parameters):
    if linked("pre_snapshot", staged_source, repository=repository,
              source_config=source_config,
              snapshot_parameters=optional_snapshot_parameters) == \
            "lib_calls":
        jq(staged_source.staged_connection)


@plugin.linked.post_snapshot()
def linked_post_snapshot(staged_source, repository, source_config,
                         optional_snapshot_parameters):
    linked("post_snapshot", staged_source, repository=repository,
           source_config=source_config,
           snapshot_parameters=optional_snapshot_parameters)
    snapshot_parameters = optional_snapshot_parameters
    resync = None if snapshot_parameters is None else \
        bool(snapshot_parameters.resync)
    logger.info("snapshot_parameters %s", json.dumps(
        _plain(snapshot_parameters)))
    return SnapshotDefinition(operation="linked.post_snapshot",
                              guid=staged_source.guid, resync=resync)


@plugin.linked.start_staging()
def start_staging(staged_source, repository, source_config):
    linked("start_staging", staged_source, repository=repository,
           source_config=source_config)


@plugin.linked.stop_staging()
def stop_staging(staged_source, repository, source_config):
    linked("stop_staging", staged_source, repository=repository,
           source_config=source_config)


@plugin.linked.status()
def linked_status(staged_source, repository, source_config):
    linked("status", staged_source, repository=repository,
           source_config=source_config)
    return _status(source_config)


@plugin.linked.worker()
def linked_worker(staged_source, repository, source_config):
    linked("worker", staged_source, repository=repository,
           source_config=source_config)


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    virtual("mount_specification", virtual_source, repository=repository)
    return MountSpecification(
        [Mount(virtual_source.connection.environment,
               virtual_source.parameters.mount_path)],
        OwnershipSpecification(1000, 1000))


def _configured(virtual_source, origin):
    return SourceConfigDefinition(name="vdb-" + virtual_source.guid,
                                  path=virtual_source.parameters.mount_path,
                                  origin=origin)


@plugin.virtual.configure()
def configure(virtual_source, snapshot, repository):
    virtual("configure", virtual_source, repository=repository,
            snapshot=snapshot)
    return _configured(virtual_source, "configure")


@plugin.virtual.initialize()
def initialize(virtual_source, repository):
    virtual("initialize", virtual_source, repository=repository)
    return _configured(virtual_source, "initialize")


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    virtual("reconfigure", virtual_source, repository=repository,
            source_config=source_config, snapshot=snapshot)
    return source_config


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    virtual("unconfigure", virtual_source, repository=repository,
            source_config=source_config)


@plugin.virtual.start()
def start(virtual_source, repository, source_config):
    virtual("start", virtual_source, repository=repository,
            source_config=source_config)


@plugin.virtual.stop()
def stop(virtual_source, repository, source_config):
    virtual("stop", virtual_source, repository=repository,
            source_config=source_config)


@plugin.virtual.pre_snapshot()
def virtual_pre_snapshot(virtual_source, repository, source_config):
    virtual("pre_snapshot", virtual_source, repository=repository,
            source_config=source_config)


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    virtual("post_snapshot", virtual_source, repository=repository,
            source_config=source_config)
    return SnapshotDefinition(operation="virtual.post_snapshot",
                              guid=virtual_source.guid)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    virtual("status", virtual_source, repository=repository,
            source_config=source_config)
    return _status(source_config)


@plugin.upgrade.repository("1.1")
def repository_migration(old_repository):
    old_repository["migrations"] = \
        old_repository.get("migrations", []) + ["1.1"]
    return old_repository


@plugin.upgrade.snapshot("1.2")
def snapshot_migration(old_snapshot):
    old_snapshot["migrations"] = old_snapshot.get("migrations", []) + ["1.2"]
    return old_snapshot
