"""``boneage serve``: the estimator over HTTP with its web page (extra: serve; see docs/serve.md)."""

from __future__ import annotations

import argparse
import logging

from pydantic import ValidationError

from boneage.errors import InputError, printable
from boneage.serve import require_serve
from boneage.serve.settings import MAX_UPLOAD_BYTES, MIB, ServeSettings


def settings(args: argparse.Namespace) -> ServeSettings:
    """The options, checked; a value out of range is a usage error (exit 2), not a traceback."""
    try:
        return _settings(args)
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise InputError(problems) from exc


def _settings(args: argparse.Namespace) -> ServeSettings:
    if args.max_upload_mb * MIB > MAX_UPLOAD_BYTES:  # said in the option's unit, not the setting's bytes
        raise InputError(f"--max-upload-mb: at most {MAX_UPLOAD_BYTES // MIB:,} (MiB), not {args.max_upload_mb:g}")
    return ServeSettings(host=args.host, port=args.port, model=args.model, runtime=args.runtime, threads=args.threads,
                         max_concurrent=args.max_concurrent, queue=args.queue,
                         max_upload_bytes=args.max_upload_mb * MIB,
                         max_connections=args.max_connections, check_input=not args.no_input_check,
                         views=args.views, read_timeout=args.read_timeout)


def address(host: str, port: int) -> str:
    """The URL of the service, the host escaped (it is printed) and an IPv6 address in brackets."""
    shown = printable(host)
    return f"http://[{shown}]:{port}/" if ":" in host else f"http://{shown}:{port}/"


def run(args: argparse.Namespace) -> int:
    """Serves until Ctrl-C, then exits 0. The model loads once, in a thread at startup (requests
    meanwhile get 503 ``not_ready``); the access log leaves out query strings, which may name a patient.
    Two lines say where: "starting on" before the port is bound, "serving on" with the port bound
    (the one the system picked for ``--port 0``)."""
    config = settings(args)  # a wrong option first (exit 2): it is wrong whatever is installed
    require_serve()  # a missing extra is named (exit 5) before anything starts
    import uvicorn

    from boneage.serve.app import create_app
    from boneage.serve.server import AnnouncingServer, header_timeout

    logging.getLogger("boneage.serve").setLevel(logging.INFO)  # one line a request, without patient data
    where = f"port {config.port}" if config.port else "a port the system picks"
    print(f"boneage: starting on {printable(config.host)}, {where}", flush=True)

    def listening(bound: int) -> None:
        print(f"boneage: serving on {address(config.host, bound)} (API docs at /docs); Ctrl-C stops it", flush=True)

    # uvicorn's own access log prints query strings: ours (boneage.serve) prints method, route, status, time
    # limit_concurrency: thousands of idle or slow connections each held a socket and a task; uvicorn answers 503
    # when its count of open connections, which includes the one asking, reaches it: one more than
    # --max-connections serves that many (it served one fewer). http: the deadlines for a request's headers and
    # body (uvicorn has none), on its h11 protocol. log_config=None: uvicorn's own logging.config.dictConfig
    # closes every handler the process already has (a library's, TensorFlow's absl handler closed the stream
    # it wrote to); its loggers go to the CLI's handler instead, at the level asked
    server = AnnouncingServer(uvicorn.Config(
        create_app(config), host=config.host, port=config.port, access_log=False, log_config=None,
        limit_concurrency=config.max_connections + 1, http=header_timeout(config.read_timeout),
        log_level="info" if args.verbose else "warning", proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips), listening)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C, then raises it again for the caller
        return 0
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind, 3 when it cannot start: not a model error
        if exc.code in (0, None):
            return 0
        raise InputError(f"cannot serve on {printable(config.host)}:{config.port}: the port is in use or the host "
                         "does not resolve (uvicorn's message is above)") from exc
    return 0
