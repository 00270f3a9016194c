"""``python -m nbtools serve EXPORT_OR_RUN [--port N]``: an OpenAI-compatible server for an export or a run.

transformers serve, in this process, on the merged export (or an adapter export on its base model, or a run's base
model + adapter; ``--base``: the run's base model alone, for the model lab's base side). Prints the URL and a ready
``curl`` and Python call, then serves until Ctrl-C, which stops it (no process is left behind).

Exit codes: 130 stopped with Ctrl-C (the usual end), 2 the folder cannot be served or the port is in use (the
message names it and the fix), 3 an internal error (details in a file named on the one line printed).
"""

from __future__ import annotations

import argparse
import sys


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535 (0: any free port), got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nbtools.serve import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument("path", metavar="EXPORT_OR_RUN",
                        help="an export folder (merged, or an adapter on its base model) or a run folder")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; 0.0.0.0: every "
                             "network interface — the server has no authentication)")
    parser.add_argument("--name", help="model name clients ask for (default: the export's or the run's model name)")
    parser.add_argument("--base", action="store_true",
                        help="serve the run's base model with the run's processor (EXPORT_OR_RUN must be a run): the "
                             "base side of the model lab")


def run(args: argparse.Namespace) -> int:
    from nbtools.errors import EXIT_INTERRUPTED, details_in
    from nbtools.evaluate.run_model import existing_run_folder
    from nbtools.serve import Server, banner, listening_socket, load_served

    sock = listening_socket(args.host, args.port)  # a port in use is reported before minutes of loading
    try:
        with details_in(existing_run_folder(args.path)):
            served = load_served(args.path, base=args.base, name=args.name)
        server = Server(served, args.host, args.port, log_level="info", sock=sock).start()
    except BaseException:
        sock.close()
        raise
    print(banner(server), flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:  # the usual end: the server is stopped and its port closed
        print(f"nbtools serve: stopped (Ctrl-C); {server.url} no longer answers", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0
