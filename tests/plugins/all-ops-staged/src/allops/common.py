"""Behaviours, echoing and library calls shared by every operation."""

import json
import logging
import os
import signal
import sys
import time

from dlpx.virtualization import libs
from dlpx.virtualization.libs.exceptions import LibraryError
from dlpx.virtualization.platform.exceptions import (IncorrectPluginCodeError,
                                                     UserError)

logger = logging.getLogger("allops")


def setup_logging():
    """Send every log record (DEBUG and up) to the engine."""
    root = logging.getLogger()
    if not any(isinstance(h, libs.PlatformHandler) for h in root.handlers):
        handler = libs.PlatformHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def behavior_of(params):
    return getattr(params, "behavior", None) or "ok"


def redact(data):
    """A parameters dict with `secret` replaced by its length."""
    if isinstance(data, dict) and "secret" in data:
        data = dict(data)
        data["secret"] = "<%d chars>" % len(data["secret"] or "")
    return data


def params_dict(params):
    if params is None:
        return None
    if isinstance(params, dict):
        return redact(params)
    return redact(params.to_dict())


def connection(conn):
    if conn is None:
        return None
    return {
        "environment": conn.environment.reference,
        "environment_name": conn.environment.name,
        "host": conn.environment.host.reference,
        "binary_path": conn.environment.host.binary_path,
        "scratch_path": conn.environment.host.scratch_path,
        "user": conn.user.reference,
        "user_name": conn.user.name,
    }


def mount(m):
    if m is None:
        return None
    env = m.remote_environment
    return {
        "environment": env.reference if env is not None else None,
        "mount_path": m.mount_path,
        "shared_path": m.shared_path,
    }


def act(op, behavior, conn=None, sync_conn=None, checked=False, received=None):
    """Log the operation, then do what `behavior` asks.

    Returns True when the caller must return a wrong type (runtime_error in
    an operation whose return type the wrapper checks).
    """
    logger.info("op %s", op)
    if received is not None:
        logger.debug("recv %s %s", op, json.dumps(received, sort_keys=True))
    if behavior == "user_error":
        raise UserError("requested user error", "Set behavior to ok.",
                        "details from the plugin")
    if behavior == "runtime_error":
        if checked:
            return True
        raise IncorrectPluginCodeError("requested runtime error in " + op)
    if behavior == "uncaught":
        raise ValueError("boom")
    if behavior == "exit":
        sys.exit(3)
    if behavior == "hang":
        time.sleep(3600)
    if behavior == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if behavior == "lib_calls":
        call_libs(conn, sync_conn or conn)
    if behavior == "log_levels":
        logger.debug("level debug %s", op)
        logger.info("level info %s", op)
        logger.warning("level warning %s", op)
        logger.error("level error %s", op)
        # Stray output must never reach the engine's protocol stream.
        print("print from " + op)
        os.write(1, ("fd 1 write from %s\n" % op).encode())
        sys.stderr.write("stderr from %s\n" % op)
    return False


def _script_result(result):
    return "exit=%d stdout=%s stderr=%s" % (
        result.exit_code, json.dumps(result.stdout), json.dumps(result.stderr))


def _credentials(creds):
    kind = type(creds).__name__
    if hasattr(creds, "password"):
        return "%s username=%s password=<%d chars>" % (
            kind, creds.username, len(creds.password or ""))
    return "%s username=%s private_key=<%d chars> public_key=<%d chars>" % (
        kind, creds.username, len(creds.private_key or ""),
        len(creds.public_key or ""))


def _supplier(supplier):
    return json.dumps(redact_password(supplier), sort_keys=True)


def redact_password(supplier):
    supplier = dict(supplier)
    if "password" in supplier:
        supplier["password"] = "<%d chars>" % len(supplier["password"] or "")
    return supplier


def call_libs(conn, sync_conn):
    """Call every library function; log `lib <name> ok|error ...` each."""
    calls = [
        ("run_bash", lambda: _script_result(libs.run_bash(
            # The platform's jq (the toolkit's), as published plugins use it.
            conn, 'printf "%s\\n" "$GREETING" | "$DLPX_BIN_JQ" -Rr .',
            variables={"GREETING": "hello"},
            use_login_shell=True))),
        ("run_expect", lambda: _script_result(libs.run_expect(
            conn, "exit 0", variables={"ANSWER": "42"}))),
        ("run_sync", lambda: str(libs.run_sync(
            sync_conn, "/var/data", rsync_user="rsync",
            exclude_paths=["tmp"], sym_links_to_follow=["current"]))),
        ("run_powershell", lambda: _script_result(libs.run_powershell(
            conn, "Get-Date"))),
        ("retrieve_credentials", lambda: _credentials(
            libs.retrieve_credentials({
                "type": "NamedPasswordCredential",
                "username": "dbuser",
                "password": "dbpass"}))),
        ("upgrade_password", lambda: _supplier(
            libs.upgrade_password("new-password", username="admin"))),
    ]
    for name, call in calls:
        try:
            summary = call()
        except LibraryError as exc:
            logger.info("lib %s error %s %s", name, exc._id, exc.message)
            continue
        logger.info("lib %s ok %s", name, summary)
