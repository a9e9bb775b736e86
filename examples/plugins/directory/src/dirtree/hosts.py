"""Calls to hosts through the engine (run_bash), with errors turned into
UserErrors a user can act on."""

import logging

from dlpx.virtualization import libs
from dlpx.virtualization.platform.exceptions import UserError

from dirtree import shell

logger = logging.getLogger(__name__)


def host_label(connection):
    """A readable name of the connection's host, for messages."""
    env = connection.environment
    return env.host.name or env.name or env.reference


def run(connection, command):
    logger.debug("run on %s: %s", host_label(connection), command)
    result = libs.run_bash(connection, command)
    logger.debug("exit %d", result.exit_code)
    return result


def last_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def is_directory(connection, path):
    result = run(connection, shell.is_directory(path))
    return last_line(result.stdout) == "yes"


def has_rsync(connection):
    return last_line(run(connection, shell.has_rsync()).stdout) == "yes"


def count_files(connection, path):
    """(files, bytes, taken_at) of the regular files below `path`."""
    result = run(connection, shell.count_files(path))
    lines = [line for line in (result.stdout or "").splitlines()
             if line.strip()]
    if result.exit_code != 0 or len(lines) < 2:
        raise UserError(
            "Could not count the files in %s on %s (exit code %d)."
            % (path, host_label(connection), result.exit_code),
            "Check that %s exists on %s and that the environment user can "
            "read everything below it." % (path, host_label(connection)),
            result.stderr or result.stdout)
    if result.stderr:
        logger.warning("some files below %s could not be read; the counts "
                       "may be low: %s", path, result.stderr.strip())
    files, size = lines[-2].split()
    return int(files), int(size), lines[-1].strip()


# What ssh prints when it cannot log in; rsync then exits 255 or, if it
# noticed first, 12 (protocol stream closed).
SSH_FAILURES = ("ssh:", "Permission denied", "Host key verification failed",
                "Could not resolve hostname", "Connection timed out")


def _ssh_failed(stderr):
    return any(text in (stderr or "") for text in SSH_FAILURES)


def pull(staged_connection, user, host, port, source_path, target_path):
    """Mirror the source directory into the staging mount with rsync over
    SSH, run on the staging host."""
    command = shell.rsync_pull(user, host, port, source_path, target_path)
    staging = host_label(staged_connection)
    logger.info("copying %s@%s:%s to %s on %s", user, host, source_path,
                target_path, staging)
    result = run(staged_connection, command)
    if result.exit_code == 0:
        return
    if result.exit_code == shell.RSYNC_VANISHED:
        logger.warning("some source files vanished during the copy (they "
                       "changed while rsync ran); the snapshot holds the "
                       "rest: %s", result.stderr.strip())
        return
    login = "ssh -p %d %s@%s" % (port, user, host)
    stderr = result.stderr or result.stdout
    if result.exit_code == shell.NOT_FOUND:
        action = ("Install rsync on the staging host %s (it runs the copy)."
                  % staging)
    elif "rsync: command not found" in (stderr or "") or (
            result.exit_code == shell.RSYNC_PROTOCOL
            and "not found" in (stderr or "")):
        action = "Install rsync on the source host %s." % host
    elif result.exit_code == shell.SSH_FAILED or (
            result.exit_code == shell.RSYNC_PROTOCOL
            and _ssh_failed(stderr)):
        action = ("Check that the staging host's user can ssh to the source "
                  "host without a password: on %s, as the staging "
                  "environment's user, `%s true` must succeed (install that "
                  "user's public key in ~%s/.ssh/authorized_keys on %s), and "
                  "that sourceHost and sshPort are right."
                  % (staging, login, user, host))
    else:
        action = ("Check that %s exists on %s and that %s can read "
                  "everything below it; check that the staging host's user "
                  "can ssh to the source host (`%s true` on %s)."
                  % (source_path, host, user, login, staging))
    raise UserError(
        "Copying %s from %s to the staging host %s failed (rsync exit code "
        "%d)." % (source_path, host, staging, result.exit_code),
        action, stderr)


def check_export_target(connection, target_directory):
    """Refuse a V2P target that is a file or a non-empty directory."""
    where = host_label(connection)
    if not target_directory.startswith("/"):
        raise UserError(
            "The target directory %r is not an absolute path."
            % target_directory,
            "Give an absolute path on %s." % where)
    state = last_line(run(connection,
                          shell.target_state(target_directory)).stdout)
    logger.info("export target %s on %s: %s", target_directory, where, state)
    if state == "notdir":
        raise UserError(
            "%s on %s exists and is not a directory." % (target_directory,
                                                         where),
            "Choose another target directory, or remove that file.",
            "state of %s: %s" % (target_directory, state))
    if state == "notempty":
        raise UserError(
            "%s on %s is not empty." % (target_directory, where),
            "Choose an empty or new directory, so that the export does not "
            "mix with other files.",
            "state of %s: %s" % (target_directory, state))
    if state not in ("absent", "empty"):
        raise UserError(
            "Could not inspect %s on %s." % (target_directory, where),
            "Check that the environment user can reach that path.")
