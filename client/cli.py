"""``detect-client``: detect objects in image files from the command line.

Every failure ends in one line on stderr and a documented exit status (see
:data:`EXIT_CODES_HELP`); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._exceptions import (
    BadRequest,
    ClientError,
    ConfigError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    UnreadableInput,
)
from ._options import (
    ENVIRONMENT_HELP,
    add_connection_arguments,
    config_from_args,
    positive_float,
    positive_int,
)

__all__ = ["EXIT_CODES_HELP", "build_parser", "exit_code_for", "main"]

PROG = "detect-client"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_READY = 4
EXIT_BAD_INPUT = 5
EXIT_SERVER_ERROR = 6
EXIT_UNAUTHORIZED = 7
EXIT_OVERLOADED = 8
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0  success (health: the model is ready)
  1  unexpected failure, or evaluate without its extra (pycocotools)
  2  usage error: bad flag or setting
  3  server unreachable: connection refused, DNS, TLS, timeout, gateway 502/504
  4  model not ready, or no model of that name
  5  bad input: unreadable or missing file, or the server refused the request (400)
  6  server error (500...) or a response the client cannot read
  7  credentials refused (401/403)
  8  server overloaded (429/503) after all retries
  130 interrupted

""" + ENVIRONMENT_HELP

# Most specific first: the first matching class decides the exit status.
_EXIT_CODES: tuple[tuple[type[ClientError], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (UnreadableInput, EXIT_BAD_INPUT),
    (BadRequest, EXIT_BAD_INPUT),
    (ServerUnreachable, EXIT_UNREACHABLE),
    (ModelNotFound, EXIT_NOT_READY),
    (ModelNotReady, EXIT_NOT_READY),
    (Unauthorized, EXIT_UNAUTHORIZED),
    (Overloaded, EXIT_OVERLOADED),
    (ServerError, EXIT_SERVER_ERROR),
)


class CommandUnavailable(ClientError):
    """A subcommand whose optional extra is not installed (``evaluate`` needs ``[eval]``)."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit status for an error."""
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["bench"]:
        # The benchmark owns all of its flags; hand them over untouched.
        return _guarded(lambda: _bench(args[1:]))
    parsed = build_parser().parse_args(args)
    command: Callable[[argparse.Namespace], int] = parsed.command
    return _guarded(lambda: command(parsed))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subcommand per task."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Detect objects in images with a model served by KServe "
                    "(V1 REST, V2 REST or V2 gRPC).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _common_parser()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                              epilog=EXIT_CODES_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    detect = add("detect", "detect objects in image files, folders or glob patterns")
    detect.add_argument("inputs", nargs="+", metavar="PATH",
                        help="image file, folder of images, or glob pattern (quoted)")
    detect.add_argument("-r", "--recursive", action="store_true",
                        help="include images in subfolders of folder arguments")
    _add_detect_options(detect)
    detect.add_argument("--json", metavar="FILE", help="write all results as JSON ('-': stdout)")
    detect.add_argument("--csv", metavar="FILE", help="write one row per detection ('-': stdout)")
    detect.add_argument("--draw", metavar="OUTDIR",
                        help="write each image with its detections drawn, as OUTDIR/NAME.png")
    detect.add_argument("-q", "--quiet", action="store_true", help="do not print the table")
    detect.set_defaults(command=_detect)

    health = add("health", "check that the server is live and the model ready")
    health.add_argument("--wait", type=positive_float, metavar="SECONDS",
                        help="poll until the model is ready, for at most SECONDS")
    health.set_defaults(command=_health)

    metadata = add("metadata", "print the model's metadata (inputs, outputs) as JSON")
    metadata.set_defaults(command=_metadata)

    models = add("models", "list the server's models: its repository index (every model "
                           "folder, loaded or not, with its state), or the models it serves")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(command=_models)

    evaluate = add("evaluate", "score the model against annotated images (mAP, and recall "
                               "by object size)")
    evaluate.add_argument("images", help="folder of images")
    evaluate.add_argument("annotations", help="annotation file for those images")
    _add_detect_options(evaluate, default_threshold=0.05)
    evaluate.add_argument("--recall-threshold", type=float, default=0.5, metavar="S",
                          help="score a detection needs to count in the recall by size "
                               "(default: %(default)s, the server's default threshold)")
    evaluate.add_argument("--view", type=positive_int, default=320, metavar="PX",
                          help="size bands measure an object's larger side with the picture "
                               "resized to PX x PX, as a 320 px SSD sees it "
                               "(default: %(default)s)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    evaluate.set_defaults(command=_evaluate)

    # Listed for --help only: main() hands `bench ...` to client.loadgen before parsing.
    sub.add_parser("bench", help="load-test the server (see `detect-client bench --help`)",
                   add_help=False)
    return parser


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common)
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    return common


def _add_detect_options(parser: argparse.ArgumentParser,
                        default_threshold: float | None = None) -> None:
    parser.add_argument("--score-threshold", type=float, default=default_threshold,
                        metavar="S", help="lowest score to keep (default: the server's)"
                        if default_threshold is None else "lowest score to keep "
                        "(default: %(default)s)")
    parser.add_argument("--max-detections", type=positive_int, metavar="N",
                        help="most detections per image (default: the server's)")
    parser.add_argument("--classes", metavar="NAMES",
                        help="comma-separated class names to keep, e.g. circle,square")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                        help="images per request (default: %(default)s)")


def _guarded(run: Callable[[], int]) -> int:
    """Runs a command, turning every failure into one line on stderr and an exit status."""
    try:
        return run()
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a message.
        sys.stderr.close()
        return EXIT_OK
    except ClientError as exc:
        _fail(str(exc))
        return exit_code_for(exc)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
        return EXIT_FAILURE
    except Exception as exc:  # the last line of defence against a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def _fail(message: str) -> None:
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)


def _client(args: argparse.Namespace) -> Any:
    from ._client import DetectionClient

    config = config_from_args(args, batch_size=getattr(args, "batch_size", 8))
    return DetectionClient(config=config)


def _detect_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    return {"score_threshold": args.score_threshold, "max_detections": args.max_detections,
            "classes": classes}


def _detect(args: argparse.Namespace) -> int:
    from ._files import drawing_names, expand_inputs
    from ._report import TableWriter, json_document, write_csv, write_json
    from ._types import ImageResult

    for flag, target in (("--json", args.json), ("--csv", args.csv)):
        if target and target != "-" and not Path(target).resolve().parent.is_dir():
            raise ConfigError(f"{flag} {target}: its folder does not exist")
    files = expand_inputs(args.inputs, recursive=args.recursive)
    names = [str(path) for path in files]
    drawings: list[Path] = []
    if args.draw:
        outdir = Path(args.draw)
        outdir.mkdir(parents=True, exist_ok=True)
        drawings = drawing_names(files, outdir)
    to_stdout = "-" in (args.json, args.csv)
    table = None if args.quiet or to_stdout else TableWriter(sys.stdout, names)
    results: list[ImageResult] = []
    started = time.monotonic()
    with _client(args) as client, _progress(len(files), args.no_progress) as bar:
        for i, result in enumerate(client.iter_detect(files, **_detect_kwargs(args))):
            results.append(result)
            if table is not None:
                table.write(names[i], result)
            if drawings:
                _draw(files[i], result, drawings[i])
            bar.update(1)
    if args.json:
        write_json(args.json, json_document(args.model, args.protocol, names, results),
                   sys.stdout)
    if args.csv:
        write_csv(args.csv, names, results, sys.stdout)
    found = sum(len(r.detections) for r in results)
    print(f"{len(results)} image(s), {found} detection(s) in "
          f"{time.monotonic() - started:.2f}s", file=sys.stderr)
    return EXIT_OK


def _draw(source: Path, result: Any, target: Path) -> None:
    from .draw import draw_detections, open_oriented

    draw_detections(open_oriented(source), result.detections).save(target, format="PNG")


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        health = client.wait_ready(args.wait) if args.wait else client.health()
    print(f"live: {'yes' if health.live else 'no'}  ready: {'yes' if health.ready else 'no'}")
    return EXIT_OK if health.ready else EXIT_NOT_READY


def _metadata(args: argparse.Namespace) -> int:
    import json

    with _client(args) as client:
        metadata = client.metadata()
    print(json.dumps(metadata.to_dict(), indent=2))
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    import json

    with _client(args) as client:
        entries = client.models()
    if args.json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return EXIT_OK
    rows = [("NAME", "VERSION", "STATE", "REASON")] + [
        (e.name, e.version or "-", e.state or "-", e.reason) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
              + "  " + row[3])
    if not entries:
        print("(no model)", file=sys.stderr)
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from ._report import write_json

    evaluation = _command_module("evaluate")
    try:
        evaluation.require_pycocotools()
    except ImportError as exc:
        raise CommandUnavailable(f"the evaluate command is not available: {exc}") from None
    options = _detect_kwargs(args)
    if args.recall_threshold < args.score_threshold:
        raise ConfigError(f"--recall-threshold {args.recall_threshold} is below "
                          f"--score-threshold {args.score_threshold}: detections between the "
                          f"two are never fetched")
    with _client(args) as client:
        def detect_fn(paths: Sequence[Any]) -> list[list[tuple[Any, float, int]]]:
            return [[(d.box, d.score, d.label_id) for d in result.detections]
                    for result in client.detect(paths, **options)]

        try:
            report = evaluation.run(detect_fn, args.images, args.annotations,
                                    progress=not args.no_progress,
                                    recall_threshold=args.recall_threshold, view=args.view)
        except (FileNotFoundError, ValueError) as exc:
            if isinstance(exc, ClientError):
                raise
            raise UnreadableInput(f"cannot evaluate: {exc}") from None
    print(report.format())
    if args.json:
        write_json(args.json, report.to_dict(), sys.stdout)
    return EXIT_OK


def _bench(argv: list[str]) -> int:
    return int(_command_module("loadgen").main(argv) or 0)


def _command_module(name: str) -> Any:
    """``client.<name>``, imported on first use so that other commands start quickly.

    Every build ships it (``[tool.setuptools.packages.find]`` takes ``client*``); what
    may be missing is an extra it needs, which the command itself reports.
    """
    import importlib

    return importlib.import_module(f"{__package__}.{name}")


def _progress(total: int, disabled: bool) -> Any:
    from tqdm import tqdm

    # None lets tqdm hide itself when stderr is not a terminal.
    return tqdm(total=total, unit="img", file=sys.stderr, leave=False,
                disable=True if disabled or total < 2 else None)
