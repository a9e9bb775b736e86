"""Hostile test plugin (tests/plugins/README.md).

Tries to get out of the engine's worker sandbox and reports what each
attempt got, at import time (only when the engine's worker loads it, never
under `dvp build`) and in `linked.post_snapshot`.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import sys
import time

from dlpx.virtualization import libs
from dlpx.virtualization.platform import Mount, MountSpecification, Plugin

from generated.definitions import (SnapshotDefinition,
                                   SourceConfigDefinition)

logging.getLogger().addHandler(libs.PlatformHandler())
logging.getLogger().setLevel(logging.DEBUG)
logger = logging.getLogger("hostile")

plugin = Plugin()


def outcome(fn):
    """`ok[: detail]` or `error: <errno name or exception class>`."""
    try:
        result = fn()
        return "ok" if result is None else "ok: %s" % (result,)
    except MemoryError:
        return "error: MemoryError"
    except OSError as exc:
        return "error: %s" % errno.errorcode.get(exc.errno,
                                                 type(exc).__name__)
    except Exception as exc:
        return "error: %s" % type(exc).__name__


def read(path):
    with open(path, "rb") as f:
        return "read %d bytes" % len(f.read())


def write(path):
    with open(path, "w") as f:
        f.write("hostile\n")
    return "wrote %s" % path


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.close()
    return "connected"


def new_user_namespace():
    """unshare(CLONE_NEWUSER) in a child (so this process stays as it is)."""
    import ctypes
    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, os.strerror(code))
    return "unshared"


def run_thread():
    import threading
    done = []
    t = threading.Thread(target=lambda: done.append(1))
    t.start()
    t.join()
    return "ran" if done else "did not run"


def run_subprocess():
    import subprocess
    return subprocess.run(["/bin/true"], check=True).returncode


def engine_processes():
    """Pids whose command line is a `doppel serve`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"doppel serve" in cmd:
            found.append(int(pid))
    return found


def probes(data_dir, port, marker):
    targets = {
        "shadow": "/etc/shadow",
        "proc1_environ": "/proc/1/environ",
        "parent_environ": "/proc/%d/environ" % os.getppid(),
        # An unconfined worker's code lies in <data>/plugins/<id>/build-<n>.
        "relative_secrets_key": os.path.join(os.getcwd(), "..", "..", "..",
                                             "secrets.key"),
    }
    for name in ("secrets.key", "metadata.db", "test-admin-password"):
        if data_dir:
            targets["data:" + name] = os.path.join(data_dir, name)
    home = os.environ.get("HOME", "/nonexistent")
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1)
                      for line in f if ":\t" in line)
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "status": {k: status.get(k) for k in
                   ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs",
                    "Seccomp")},
        "read": {k: outcome(lambda p=p: read(p)) for k, p in targets.items()},
        "environ": sorted(os.environ),
        "write": {
            "etc": outcome(lambda: write("/etc/doppel-hostile-" + marker)),
            "root": outcome(lambda: write("/doppel-hostile-" + marker)),
            "code": outcome(lambda: write(os.path.join(
                os.getcwd(), "doppel-hostile-" + marker))),
            "scratch": outcome(lambda: write(os.path.join(
                home, "doppel-hostile-" + marker))),
            "tmp": outcome(lambda: write("/tmp/doppel-hostile-" + marker)),
        },
        "connect": {
            "engine": outcome(lambda: connect(port)) if port else "skipped",
            "ssh": outcome(lambda: connect(22)),
        },
        "user_namespace": outcome(new_user_namespace),
        "thread": outcome(run_thread),
        "subprocess": outcome(run_subprocess),
        "engine_processes": engine_processes(),
    }


def leave_child(marker):
    """A double-forked, setsid `sleep` whose argv[0] carries the marker;
    returns once it runs."""
    # Close-on-exec: EOF here means the grandchild has exec'd (or died).
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, ready_w)
                os.closerange(ready_w + 1, 1024)
                os.execv("/bin/sleep",
                         ["doppel-hostile-sleep-" + marker, "3600"])
        finally:
            os._exit(0)
    os.close(ready_w)
    os.waitpid(pid, 0)
    os.read(ready_r, 1)
    os.close(ready_r)
    return "left a child"


def allocate():
    block = bytearray(10 * 1024 ** 3)
    size = len(block)
    del block
    return "allocated %d bytes" % size


def protocol_fd():
    """The worker's duplicate of its original stdout: the protocol stream."""
    for fd in range(3, 256):
        try:
            mode = os.fstat(fd).st_mode
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            continue
        if stat.S_ISFIFO(mode) and flags & os.O_ACCMODE == os.O_WRONLY:
            return fd
    raise RuntimeError("no protocol stream found")


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def flood_protocol():
    """1 GiB on the protocol stream without a newline."""
    fd = protocol_fd()
    chunk = b"x" * (1 << 20)
    for _ in range(1024):
        write_all(fd, chunk)
    return "the engine read 1 GiB of one line"


def flood_output():
    """1 GiB as one line through print() (stdout, which is stderr), then
    1 GiB of 1 KiB lines on stderr."""
    chunk = "o" * (1 << 20)
    for _ in range(1024):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")
    sys.stdout.flush()
    block = ("e" * 1023 + "\n") * 1024
    for _ in range(1024):
        sys.stderr.write(block)
    sys.stderr.flush()
    return "flooded"


def huge_logs():
    """A 64 MiB log message through the SDK, and a 1 MiB one written
    straight onto the protocol stream (past the worker's own cut)."""
    logger.info("L" * (64 << 20))
    line = json.dumps({"type": "log", "level": "INFO",
                       "message": "R" * (1 << 20)}) + "\n"
    write_all(protocol_fd(), line.encode())
    return "logged"


# Only inside the engine's worker: `dvp build` imports this module on the
# developer's machine, unconfined, and must find nothing hostile there.
IMPORT_REPORT = None
if "dlpx.virtualization._engine" in sys.modules:
    IMPORT_REPORT = probes(None, None, "import")


@plugin.discovery.repository()
def repository_discovery(source_connection):
    return []


@plugin.discovery.source_config()
def source_config_discovery(source_connection, repository):
    return []


@plugin.linked.post_snapshot()
def linked_post_snapshot(direct_source, repository, source_config,
                         optional_snapshot_parameters):
    p = direct_source.parameters
    marker = p.marker or "none"
    attack = p.attack or "probe"
    report = {"attack": attack}
    if attack == "probe":
        report["import"] = IMPORT_REPORT
        report["op"] = probes(p.data_dir, p.engine_port, marker)
    elif attack == "memory":
        report["memory"] = outcome(allocate)
    elif attack == "leave_child":
        report["child"] = outcome(lambda: leave_child(marker))
    elif attack == "leave_child_and_hang":
        leave_child(marker)
        time.sleep(3600)
    elif attack == "flood_protocol":
        report["flood"] = outcome(flood_protocol)
    elif attack == "flood_output":
        report["flood"] = outcome(flood_output)
    elif attack == "huge_logs":
        report["logs"] = outcome(huge_logs)
    else:
        raise ValueError("unknown attack %r" % attack)
    return SnapshotDefinition(report=json.dumps(report, sort_keys=True))


@plugin.virtual.configure()
def configure(virtual_source, repository, snapshot):
    return SourceConfigDefinition(name="vdb-" + virtual_source.guid)


@plugin.virtual.reconfigure()
def reconfigure(virtual_source, repository, source_config, snapshot):
    return SourceConfigDefinition(name=source_config.name)


@plugin.virtual.mount_specification()
def virtual_mount_specification(virtual_source, repository):
    return MountSpecification([Mount(virtual_source.connection.environment,
                                     virtual_source.parameters.mount_path)])


@plugin.virtual.post_snapshot()
def virtual_post_snapshot(virtual_source, repository, source_config):
    return SnapshotDefinition(report="{}")
