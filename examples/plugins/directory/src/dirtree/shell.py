"""Bash snippets the plugin runs on hosts.

Pure functions: every value that comes from a user or the engine is quoted
with `quote` (shlex's, or pipes' on Python 2.7), so the snippets can be
read (and tested) as plain text.
"""

import posixpath

try:
    from shlex import quote
except ImportError:  # Python 2.7: a PYTHON27 build of this plugin
    from pipes import quote

# Text as it is (unicode on Python 2.7), anything else as its str().
_TEXT = type(u"")

# Options for the ssh that rsync starts on the staging host. BatchMode makes
# a missing key fail at once instead of waiting for a password prompt;
# accept-new pins the source host's key on first contact; ConnectTimeout
# bounds the wait for an unreachable host (connection and SSH banner).
SSH_OPTIONS = ("-o BatchMode=yes -o StrictHostKeyChecking=accept-new "
               "-o ConnectTimeout=30")

# rsync exit codes that the plugin explains (see `man rsync`).
RSYNC_VANISHED = 24
RSYNC_PROTOCOL = 12
SSH_FAILED = 255
NOT_FOUND = 127


def q(value):
    return quote(value if isinstance(value, _TEXT) else str(value))


def ssh_command(port):
    return "ssh -p %d %s" % (int(port), SSH_OPTIONS)


def as_dir(path):
    """`path` with exactly one trailing slash: rsync then copies the
    directory's contents, not the directory itself."""
    return path.rstrip("/") + "/"


def rsync_pull(user, host, port, source_path, target_path):
    """Mirror `user@host:source_path` into `target_path` (run on the staging
    host). -s keeps the remote path away from the remote shell, so paths
    with spaces work with any rsync since 3.0. --inplace rewrites only the
    changed blocks of a changed file instead of a new copy renamed over it:
    on the engine's copy-on-write storage the earlier snapshots keep
    sharing the rest, and through the staging mount it saves the temporary
    file's round trips (an interrupted sync is harmless: no snapshot is
    taken, and the next one mirrors again)."""
    remote = "%s@%s:%s" % (user, host, as_dir(source_path))
    return "rsync -a -s --inplace --delete -e %s -- %s %s" % (
        q(ssh_command(port)), q(remote), q(as_dir(target_path)))


def has_rsync():
    return ("if command -v rsync >/dev/null 2>&1; then echo yes; "
            "else echo no; fi")


def is_directory(path):
    """Prints `yes` if `path` is a directory, `no` otherwise."""
    return "if [ -d %s ]; then echo yes; else echo no; fi" % q(path)


def count_files(path):
    """Prints `<files> <bytes>` on one line and the UTC time on the next;
    exits 3 if `path` is not a directory. %.0f keeps awk from clamping
    large sums to 32 bits."""
    return "\n".join([
        "d=%s" % q(path),
        'if [ ! -d "$d" ]; then echo "not a directory: $d" >&2; exit 3; fi',
        "LC_ALL=C find \"$d\" -type f -printf '%s\\n' "
        "| awk '{n++; s+=$1} END {printf \"%.0f %.0f\\n\", n, s}'",
        "date -u +%Y-%m-%dT%H:%M:%SZ",
    ])


def target_state(path):
    """Prints `absent`, `empty`, `notempty` or `notdir` for `path`."""
    return "\n".join([
        "t=%s" % q(path),
        'if [ ! -e "$t" ]; then echo absent',
        'elif [ ! -d "$t" ]; then echo notdir',
        'elif [ -z "$(ls -A "$t")" ]; then echo empty',
        "else echo notempty; fi",
    ])


def basename(path):
    return posixpath.basename(path.rstrip("/"))
