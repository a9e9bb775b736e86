"""Direct test plugin (tests/plugins/README.md).

Every operation logs `op <group>.<operation>` at INFO.
"""

import logging

from dlpx.virtualization import libs
from dlpx.virtualization.platform import (Mount, MountSpecification, Plugin,
                                          Status)

from generated.definitions import (RepositoryDefinition, SnapshotDefinition,
                                   SourceConfigDefinition)

logging.getLogger().addHandler(libs.PlatformHandler())
logging.getLogger().setLevel(logging.DEBUG)
logger = logging.getLogger("direct")

plugin = Plugin()


@plugin.discovery.repository()
def repository_discovery(source_connection):
    logger.info("op discovery.repository")
    return [RepositoryDefinition(
        name="direct-repo-" + source_connection.environment.reference)]


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    logger.info("op discovery.source_config")
    return [SourceConfigDefinition(name=repository.name + "-data",
                                   path="/var/lib/direct/data")]


@plugin.linked.pre_snapshot()
def linked_pre_snapshot(direct_source, repository, source_config,
                        optional_snapshot_parameters):
    logger.info("op linked.pre_snapshot")
    # A LibraryError from the engine propagates (unhandled_library_error).
    libs.run_sync(direct_source.connection, source_config.path)
    logger.info("synced %s", source_config.path)


@plugin.linked.post_snapshot()
def linked_post_snapshot(direct_source, repository, source_config,
                         optional_snapshot_parameters):
    logger.info("op linked.post_snapshot")
    resync = None
    if optional_snapshot_parameters is not None:
        resync = optional_snapshot_parameters.resync
    return SnapshotDefinition(operation="linked.post_snapshot",
                              source_config_name=source_config.name,
                              path=source_config.path,
                              resync=resync)


@plugin.linked.source_size()
def linked_source_size(direct_source, repository, source_config):
    logger.info("op linked.source_size")
    return 4096


@plugin.linked.pre_source_to_physical()
def linked_pre_source_to_physical(direct_source, repository, source_config,
                                  snapshot, physical_source):
    logger.info("op linked.pre_source_to_physical %s",
                physical_source.target_directory)


@plugin.linked.source_to_physical()
def linked_source_to_physical(direct_source, repository, source_config,
                              snapshot, physical_source):
    logger.info("op linked.source_to_physical %s",
                physical_source.target_directory)


@plugin.virtual.configure()
def configure(virtual_source, repository, snapshot):
    logger.info("op virtual.configure")
    return SourceConfigDefinition(name="vdb-" + virtual_source.guid,
                                  path=virtual_source.parameters.mount_path)


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    logger.info("op virtual.reconfigure")
    return SourceConfigDefinition(name=source_config.name,
                                  path=virtual_source.parameters.mount_path)


@plugin.virtual.unconfigure()
def unconfigure(virtual_source, repository, source_config):
    logger.info("op virtual.unconfigure")


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    logger.info("op virtual.mount_specification")
    return MountSpecification([Mount(virtual_source.connection.environment,
                                     virtual_source.parameters.mount_path)])


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    logger.info("op virtual.post_snapshot")
    return SnapshotDefinition(operation="virtual.post_snapshot",
                              source_config_name=source_config.name,
                              path=virtual_source.parameters.mount_path)


@plugin.virtual.status()
def virtual_status(virtual_source, repository, source_config):
    logger.info("op virtual.status")
    return Status.ACTIVE
