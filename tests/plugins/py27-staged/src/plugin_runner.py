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


def act(op, params):
    """Logs the operation, then does what the `behavior` parameter says."""
    logger.info("op %s", op)
    behavior = getattr(params, "behavior", None) or "ok"
    if behavior == "user_error":
        raise UserError(u"requested user error: donn\u00e9es \u00e9chou\u00e9es",
                        u"Set behavior to ok.", u"d\u00e9tails")
    if behavior == "uncaught":
        raise ValueError("boom")
    if behavior == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return behavior


def jq(connection):
    """What the engine's DLPX_BIN_JQ does with a JSON document."""
    res = libs.run_bash(connection,
                        'printf \'{"a":[1,2]}\' | "$DLPX_BIN_JQ" -c .a')
    logger.info("jq exit=%d stdout=%s", res.exit_code, res.stdout.strip())


@plugin.discovery.repository()
def repository_discovery(source_connection):
    logger.info("op discovery.repository")
    return [RepositoryDefinition(
        name="py27-repo-" + source_connection.environment.reference)]


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    logger.info("op discovery.source_config")
    return [SourceConfigDefinition(name=repository.name + "-config")]


def _path(staged_source):
    return staged_source.parameters.mount_path or \
        "/mnt/staging/" + staged_source.guid


@plugin.linked.mount_specification()
def linked_mount_specification(staged_source, repository):
    act("linked.mount_specification", staged_source.parameters)
    return MountSpecification(
        [Mount(staged_source.staged_connection.environment,
               _path(staged_source))])


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(staged_source, repository, source_config,
                        optional_snapshot_parameters):
    if act("linked.pre_snapshot", staged_source.parameters) == "lib_calls":
        jq(staged_source.staged_connection)


@plugin.linked.post_snapshot()
def linked_post_snapshot(staged_source, repository, source_config,
                         optional_snapshot_parameters):
    act("linked.post_snapshot", staged_source.parameters)
    snapshot_parameters = optional_snapshot_parameters
    resync = None if snapshot_parameters is None else \
        bool(snapshot_parameters.resync)
    logger.info("snapshot_parameters %s", json.dumps(
        None if snapshot_parameters is None else snapshot_parameters.to_dict()))
    return SnapshotDefinition(operation="linked.post_snapshot",
                              guid=staged_source.guid, resync=resync)


@plugin.linked.start_staging()
def start_staging(staged_source, repository, source_config):
    act("linked.start_staging", staged_source.parameters)


@plugin.linked.stop_staging()
def stop_staging(staged_source, repository, source_config):
    act("linked.stop_staging", staged_source.parameters)


@plugin.linked.status()
def linked_status(staged_source, repository, source_config):
    act("linked.status", staged_source.parameters)
    return Status.ACTIVE


@plugin.linked.worker()
def linked_worker(staged_source, repository, source_config):
    act("linked.worker", staged_source.parameters)


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    act("virtual.mount_specification", virtual_source.parameters)
    return MountSpecification(
        [Mount(virtual_source.connection.environment,
               virtual_source.parameters.mount_path)],
        OwnershipSpecification(1000, 1000))


@plugin.virtual.configure()
def configure(virtual_source, snapshot, repository):
    act("virtual.configure", virtual_source.parameters)
    return SourceConfigDefinition(name="vdb-" + virtual_source.guid)


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    act("virtual.reconfigure", virtual_source.parameters)
    return source_config


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    act("virtual.unconfigure", virtual_source.parameters)


@plugin.virtual.start()
def start(virtual_source, repository, source_config):
    act("virtual.start", virtual_source.parameters)


@plugin.virtual.stop()
def stop(virtual_source, repository, source_config):
    act("virtual.stop", virtual_source.parameters)


@plugin.virtual.pre_snapshot()
def virtual_pre_snapshot(virtual_source, repository, source_config):
    act("virtual.pre_snapshot", virtual_source.parameters)


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    act("virtual.post_snapshot", virtual_source.parameters)
    return SnapshotDefinition(operation="virtual.post_snapshot",
                              guid=virtual_source.guid)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    act("virtual.status", virtual_source.parameters)
    return Status.ACTIVE


@plugin.upgrade.repository("1.1")
def repository_migration(old_repository):
    old_repository["migrations"] = \
        old_repository.get("migrations", []) + ["1.1"]
    return old_repository


@plugin.upgrade.snapshot("1.2")
def snapshot_migration(old_snapshot):
    old_snapshot["migrations"] = old_snapshot.get("migrations", []) + ["1.2"]
    return old_snapshot
