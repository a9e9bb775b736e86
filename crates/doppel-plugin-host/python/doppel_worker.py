"""Doppel plugin worker: runs one installed Delphix plugin version.

Speaks protocol version 1 of PROTOCOL.md (next to this file's crate) with
the engine: newline-delimited JSON on stdin (engine -> worker) and on the
original stdout (worker -> engine).  Uses only the standard library and
protobuf; the Delphix wrappers come from the plugin's own bundle.

Valid Python 2.7 and 3.11: PYTHON27 plugins (dvp 2.x/3.x) run on CPython
2.7 with the protobuf their bundle carries, PYTHON311 plugins on CPython
3.11 with the interpreter's protobuf.

    python -u doppel_worker.py --root DIR --entry-point pkg.module:object
"""

import argparse
import importlib
import json
import os
import sys
import threading
import traceback
import types

PY2 = sys.version_info[0] == 2
if PY2:
    text_type = unicode  # noqa: F821 (Python 2 only)
    string_types = (str, unicode)  # noqa: F821
else:
    text_type = str
    string_types = (str,)

# Set by import_protobuf(): 3.11 plugins bundle protobuf as bytecode of
# another protobuf than the one the worker can use, so the interpreter's is
# imported before the plugin directory is on sys.path; 2.7 plugins bundle
# protobuf 3.6.1 whose native parts are not Linux builds, so their
# pure-Python implementation is imported from the plugin directory.
google_protobuf = None
json_format = None
# MessageToDict's keyword for "print fields at their default": renamed in
# protobuf 5 (including_default_value_fields before).
PRINT_DEFAULTS = {}


def import_protobuf():
    global google_protobuf, json_format, PRINT_DEFAULTS
    if PY2:
        os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    import google.protobuf
    from google.protobuf import json_format as jf
    google_protobuf = google.protobuf
    json_format = jf
    names = jf.MessageToDict.__code__.co_varnames
    if "always_print_fields_with_no_presence" in names:
        PRINT_DEFAULTS = {"always_print_fields_with_no_presence": True}
    else:
        PRINT_DEFAULTS = {"including_default_value_fields": True}

PROTOCOL_VERSION = 1
MAX_TEXT = 128 * 1024  # exception text limit (contract 2.4)
# Longer log messages are cut here, so one huge log line never makes a
# protocol line the engine refuses (it kills a worker whose line passes
# 8 MiB); the engine cuts at the same size whatever arrives.
MAX_LOG_MESSAGE = 64 * 1024

USER_ERROR_ACTION = "Contact the plugin author to correct the error."

# Qualified class names looked for in an exception's MRO, in priority order.
USER_ERROR = "dlpx.virtualization.platform.exceptions.UserError"
LIBRARY_ERROR = "dlpx.virtualization.libs.exceptions.LibraryError"
RUNTIME_ERROR = "dlpx.virtualization.common.exceptions.PluginRuntimeError"
GENERATED_ERROR = "generated.definitions.base_model_.GeneratedClassesError"
PLUGIN_CLASSES = (
    "dlpx.virtualization.platform._plugin.Plugin",
    "dlpx.virtualization.platform.Plugin",
)

# Every (group, method) the worker accepts, with its request message type.
OPERATIONS = {
    "discovery": {
        "repository": "RepositoryDiscoveryRequest",
        "source_config": "SourceConfigDiscoveryRequest",
    },
    "linked": {
        "direct_pre_snapshot": "DirectPreSnapshotRequest",
        "direct_post_snapshot": "DirectPostSnapshotRequest",
        "direct_source_size": "DirectSourceSizeRequest",
        "direct_pre_source_to_physical": "DirectPreSourceToPhysicalRequest",
        "direct_source_to_physical": "DirectSourceToPhysicalRequest",
        "staged_pre_snapshot": "StagedPreSnapshotRequest",
        "staged_post_snapshot": "StagedPostSnapshotRequest",
        "start_staging": "StartStagingRequest",
        "stop_staging": "StopStagingRequest",
        "status": "StagedStatusRequest",
        "worker": "StagedWorkerRequest",
        "mount_specification": "StagedMountSpecRequest",
        "staged_source_size": "StagedSourceSizeRequest",
        "staged_pre_source_to_physical": "StagedPreSourceToPhysicalRequest",
        "staged_source_to_physical": "StagedSourceToPhysicalRequest",
    },
    "virtual": {
        "configure": "ConfigureRequest",
        "unconfigure": "UnconfigureRequest",
        "reconfigure": "ReconfigureRequest",
        "cleanup": "VirtualCleanupRequest",
        "start": "StartRequest",
        "stop": "StopRequest",
        "pre_snapshot": "VirtualPreSnapshotRequest",
        "post_snapshot": "VirtualPostSnapshotRequest",
        "status": "VirtualStatusRequest",
        "initialize": "InitializeRequest",
        "mount_specification": "VirtualMountSpecRequest",
        "virtual_source_size": "VirtualSourceSizeRequest",
        "virtual_pre_source_to_physical": "VirtualPreSourceToPhysicalRequest",
        "virtual_source_to_physical": "VirtualSourceToPhysicalRequest",
    },
    "upgrade": {
        "repository": "UpgradeRequest",
        "source_config": "UpgradeRequest",
        "linked_source": "UpgradeRequest",
        "virtual_source": "UpgradeRequest",
        "snapshot": "UpgradeRequest",
    },
}

# Library callbacks: method -> response message type (libs_pb2).
LIB_RESPONSES = {
    "run_bash": "RunBashResponse",
    "run_powershell": "RunPowerShellResponse",
    "run_expect": "RunExpectResponse",
    "run_sync": "RunSyncResponse",
    "retrieve_credentials": "CredentialsResponse",
    "upgrade_password": "UpgradePasswordResponse",
}


class DoppelProtocolError(Exception):
    """The engine sent something the worker cannot act on."""


class Channel(object):
    """The protocol stream: JSON lines in, JSON lines out."""

    def __init__(self, infile, outfile):
        self._in = infile
        self._out = outfile
        self._write_lock = threading.Lock()

    def send(self, obj):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        with self._write_lock:
            self._out.write(data)
            self._out.flush()

    def receive(self):
        """The next message as a dict; None at end of input."""
        while True:
            line = self._in.readline()
            if not line:
                return None
            line = line.strip()
            if line:
                return json.loads(line.decode("utf-8"))


def qualified_names(cls):
    # Python 2 classes have no __qualname__; SDK exceptions are top-level
    # classes, whose qualified name is their name.
    return {"%s.%s" % (c.__module__, getattr(c, "__qualname__", c.__name__))
            for c in cls.__mro__}


def text(value):
    """`value` as text; Python 2 byte strings are taken as UTF-8."""
    if isinstance(value, text_type):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return text_type(value)
    except Exception:
        # Python 2: str() of an exception with non-ASCII unicode arguments.
        return repr(value)


def truncate(value):
    value = text(value)
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT - 14] + u"\n[truncated]"
    return value


def exception_message(exc):
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], string_types):
        return text(args[0])
    value = text(exc)
    return value if value else type(exc).__name__


def call_stack(exc, tb=None):
    """The traceback, without the worker's own outermost frames."""
    # Python 2 exceptions carry no traceback: the caller passes
    # sys.exc_info()'s, taken in its except clause.
    tb = getattr(exc, "__traceback__", None) or tb
    here = __file__[:-1] if __file__.endswith(".pyc") else __file__
    while tb is not None and tb.tb_next is not None and \
            tb.tb_frame.f_code.co_filename == here:
        tb = tb.tb_next
    return u"".join(text(line) for line in
                    traceback.format_exception(type(exc), exc, tb))


def plugin_error(exc, tb=None):
    """Map an exception to a PluginErrorResult dict (contract 2.4)."""
    names = qualified_names(type(exc))
    stack = truncate(call_stack(exc, tb))
    message = truncate(exception_message(exc))
    if USER_ERROR in names:
        args = list(getattr(exc, "args", ())) + ["", ""]
        action = args[1] if isinstance(args[1], string_types) and args[1] \
            else ""
        output = args[2] if isinstance(args[2], string_types) and args[2] \
            else ""
        return {"user_error": {
            "message": message,
            "action": truncate(action or USER_ERROR_ACTION),
            "output": truncate(output or stack)}}
    if LIBRARY_ERROR in names:
        error_id = getattr(exc, "_id", 0)
        try:
            error_id = int(error_id)
        except (TypeError, ValueError):
            error_id = 0
        if not 0 <= error_id <= 0xFFFFFFFF:
            error_id = 0
        return {"unhandled_library_error": {
            "error_id": error_id, "message": message, "call_stack": stack}}
    if RUNTIME_ERROR in names:
        return {"plugin_runtime_error": {
            "message": message, "call_stack": stack}}
    if GENERATED_ERROR in names:
        return {"generated_classes_error": {
            "message": message, "call_stack": stack}}
    return {"generic_plugin_error": {
        "message": message, "type": type(exc).__name__, "call_stack": stack}}


def protocol_error(message):
    return {"error": {"generic_plugin_error": {
        "message": message, "type": "DoppelProtocolError", "call_stack": ""}}}


class EngineLibs(object):
    """Builds the `dlpx.virtualization._engine.libs` callbacks."""

    def __init__(self, channel, libs_pb2):
        self._channel = channel
        self._libs_pb2 = libs_pb2
        self._call_lock = threading.Lock()
        self._next_call = 0
        level = libs_pb2.LogRequest.DESCRIPTOR.fields_by_name["level"]
        self._levels = {v.number: v.name for v in level.enum_type.values}

    def module(self):
        mod = types.ModuleType("dlpx.virtualization._engine.libs")
        for method in LIB_RESPONSES:
            setattr(mod, method, self._make_call(method))
        mod.log = self.log
        return mod

    def _make_call(self, method):
        def call(request):
            return self.call(method, request)
        call.__name__ = method
        return call

    def call(self, method, request):
        response_type = getattr(self._libs_pb2, LIB_RESPONSES[method])
        with self._call_lock:
            self._next_call += 1
            call_id = self._next_call
            self._channel.send({
                "type": "lib_call", "call": call_id, "method": method,
                "request": json_format.MessageToDict(
                    request, preserving_proto_field_name=True,
                    **PRINT_DEFAULTS)})
            while True:
                try:
                    message = self._channel.receive()
                except ValueError as exc:
                    raise DoppelProtocolError("bad JSON: %s" % exc)
                if message is None:
                    # The engine went away: nothing left to answer to.
                    os._exit(0)
                if not isinstance(message, dict):
                    message = {}
                kind = message.get("type")
                if kind == "shutdown":
                    os._exit(0)
                if kind == "lib_reply" and message.get("call") == call_id:
                    break
                if kind == "invoke":
                    self._channel.send({
                        "type": "result", "id": message.get("id"),
                        "response": protocol_error(
                            "invoke received while a call is in flight")})
                    continue
                raise DoppelProtocolError(
                    "expected lib_reply for call %d, got %r"
                    % (call_id, truncate(json.dumps(message))[:200]))
        response = response_type()
        try:
            json_format.ParseDict(message.get("response") or {}, response)
        except Exception as exc:
            raise DoppelProtocolError(
                "bad %s: %s" % (LIB_RESPONSES[method], exc))
        return response

    def log(self, request):
        try:
            message = request.message
            if len(message) > MAX_LOG_MESSAGE:
                cut = len(message.encode("utf-8")) - len(
                    message[:MAX_LOG_MESSAGE].encode("utf-8"))
                message = u"%s\u2026 [truncated %d bytes]" % (
                    message[:MAX_LOG_MESSAGE], cut)
            self._channel.send({
                "type": "log",
                "level": self._levels.get(request.level, "ERROR"),
                "message": message})
        except BaseException:
            pass
        return self._libs_pb2.LogResponse()


def install_engine(libs_module):
    engine = types.ModuleType("dlpx.virtualization._engine")
    engine.__path__ = []
    engine.libs = libs_module
    sys.modules["dlpx.virtualization._engine"] = engine
    sys.modules["dlpx.virtualization._engine.libs"] = libs_module


def load_plugin(root, entry_point, channel):
    """Load per contract 1.3; returns (plugin, platform_pb2)."""
    module_name, sep, object_name = entry_point.partition(":")
    if not sep or not module_name or not object_name or ":" in object_name:
        raise EntryPointError("entry point %r is not module:object"
                              % entry_point)
    root = os.path.abspath(root)
    if not PY2:
        import_protobuf()
    sys.path.insert(0, root)
    os.chdir(root)
    if PY2:
        import_protobuf()
    from dlpx.virtualization.api import libs_pb2, platform_pb2
    install_engine(EngineLibs(channel, libs_pb2).module())
    module = importlib.import_module(module_name)
    plugin = getattr(module, object_name)
    if not qualified_names(type(plugin)) & set(PLUGIN_CLASSES):
        raise NotAPlugin("%s is a %s, not a dlpx.virtualization.platform."
                         "Plugin" % (entry_point, type(plugin).__name__))
    return plugin, platform_pb2


class EntryPointError(Exception):
    pass


class NotAPlugin(Exception):
    pass


def invoke(plugin, platform_pb2, message):
    """Run one invoke message; returns the `response` dict."""
    group = message.get("group")
    method = message.get("method")
    request_type = message.get("request_type")
    methods = OPERATIONS.get(group) if isinstance(group, string_types) \
        else None
    if methods is None:
        return protocol_error("unknown group %r" % (group,))
    expected = methods.get(method) if isinstance(method, string_types) \
        else None
    if expected is None:
        return protocol_error("unknown method %r in group %s"
                              % (method, group))
    if request_type != expected:
        return protocol_error("%s.%s takes %s, not %r"
                              % (group, method, expected, request_type))
    request = getattr(platform_pb2, str(expected))()
    try:
        json_format.ParseDict(message.get("request") or {}, request)
    except Exception as exc:
        return protocol_error("bad %s: %s" % (expected, exc))
    operation = getattr(getattr(plugin, str(group)), "_internal_" + method)
    try:
        response = operation(request)
        if not response.HasField("error"):
            response.return_value.SetInParent()
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, **PRINT_DEFAULTS)
    except BaseException as exc:
        return {"error": plugin_error(exc, sys.exc_info()[2])}


def serve(plugin, platform_pb2, channel):
    while True:
        try:
            message = channel.receive()
        except ValueError as exc:
            channel.send({"type": "result", "id": None,
                          "response": protocol_error("bad JSON: %s" % exc)})
            continue
        if message is None:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "shutdown":
            return
        msg_id = message.get("id") if isinstance(message, dict) else None
        if kind != "invoke":
            channel.send({"type": "result", "id": msg_id,
                          "response": protocol_error(
                              "unexpected message type %r" % (kind,))})
            continue
        try:
            response = invoke(plugin, platform_pb2, message)
        except BaseException as exc:
            response = {"error": plugin_error(exc, sys.exc_info()[2])}
        channel.send({"type": "result", "id": msg_id, "response": response})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--entry-point", required=True)
    args = parser.parse_args()

    # The protocol keeps the original stdin/stdout; plugin code gets
    # /dev/null as stdin and stderr as stdout.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    channel = Channel(proto_in, proto_out)

    try:
        plugin, platform_pb2 = load_plugin(args.root, args.entry_point,
                                           channel)
    except BaseException as exc:
        channel.send({"type": "load_error", "error": {
            "type": type(exc).__name__,
            "message": truncate(exception_message(exc)),
            "call_stack": truncate(call_stack(exc, sys.exc_info()[2]))}})
        sys.stderr.flush()
        os._exit(3)

    channel.send({"type": "ready", "protocol": PROTOCOL_VERSION,
                  "python": "%d.%d.%d" % sys.version_info[:3],
                  "protobuf": google_protobuf.__version__})
    serve(plugin, platform_pb2, channel)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
