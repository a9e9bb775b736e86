"""Calls to hosts through the engine (run_bash), with failures turned into
UserErrors a user can act on."""

import logging
import time

from dlpx.virtualization import libs
from dlpx.virtualization.platform.exceptions import UserError

from pgplugin import shell

logger = logging.getLogger(__name__)

# Scratch base when the engine gave the host none.
FALLBACK_BASE = "/var/tmp"


def label(connection):
    env = connection.environment
    return env.host.name or env.name or env.reference


def run(connection, command, variables=None):
    logger.debug("run on %s: %s", label(connection), command)
    result = libs.run_bash(connection, command, variables=variables or {})
    logger.debug("exit %d", result.exit_code)
    return result


def check(connection, command, what, action, variables=None):
    """Runs `command`; a non-zero exit is a UserError saying `what` failed."""
    result = run(connection, command, variables)
    if result.exit_code != 0:
        raise UserError(
            "%s on %s failed (exit code %d): %s" % (
                what, label(connection), result.exit_code,
                last_lines(result.stderr or result.stdout)),
            action, (result.stderr or "") + (result.stdout or ""))
    return result.stdout or ""


def last_lines(text, n=3):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " / ".join(lines[-n:]) if lines else "no output"


def yes(connection, command):
    out = run(connection, command).stdout or ""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return bool(lines) and lines[-1] == "yes"


def runtime_dir(connection, guid):
    """A private directory per object outside its dataset: the server's
    socket, its log and the replication password file live there, so no
    snapshot carries them."""
    base = (connection.environment.host.scratch_path or FALLBACK_BASE)
    return "%s/doppel-pg/%s" % (base.rstrip("/"), guid)


def query(connection, bin_dir, socket_dir, port, sql, role=None):
    """One value (the last line) of a query over the private socket."""
    command = shell.psql(bin_dir, socket_dir, port, sql, database="template1")
    if role:
        command = "PGUSER=%s %s" % (shell.q(role), command)
    out = check(connection, command, "Query %r" % sql,
                "Check the server's log in %s." % socket_dir)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def wait_until(predicate, timeout, interval=0.2):
    """Polls `predicate` until it is true or `timeout` seconds passed;
    answers whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
