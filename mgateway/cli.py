# -*- test-case-name: tests.test_export_cli,tests.test_fetch_model -*-
"""
The C{asapp-mg} command: administrative subcommands next to the gateway
itself (which runs as C{twistd asapp-mg}).

Each subcommand is a L{Command}: a function that adds its arguments to its
parser and one that runs it and returns the exit status. Expected failures are
one line on stderr and status 1; usage errors are status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs

from mgateway.asr import fetch

EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Where models go without --models-dir or a configuration naming one.
DEFAULT_MODELS_DIR = Path("models")


class CommandError(Exception):
    """An expected failure of a subcommand: C{str()} is the one line to show."""

    def __init__(self, message: str, status: int = EXIT_FAILURE):
        super().__init__(message)
        self.status = status


@attrs.frozen
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run C{asapp-mg} with C{argv} (the process arguments by default); the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error or the help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.command.run(args)
    except CommandError as e:
        print(f"{parser.prog} {args.command.name}: {e}", file=sys.stderr)
        return e.status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asapp-mg", description="asapp-mg administration")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        subparser = subcommands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(command=command)
    return parser


def _on_reactor(work: Callable[[object], Awaitable], expected: tuple[type[Exception], ...] = ()):
    """
    Run the reactor until C{work(reactor)} is done: its result, or a
    L{CommandError} with the message of an C{expected} error, or the type
    and message of any other (such as a peer answering outside its spec).
    """
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    outcome = {}

    async def run():
        try:
            outcome["result"] = await work(reactor)
        except expected as e:
            outcome["error"] = str(e)
        except Exception as e:
            outcome["error"] = f"{type(e).__name__}: {e}"
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(run()))
    reactor.run()
    if "error" in outcome:
        raise CommandError(outcome["error"])
    return outcome["result"]


# -- fetch-model ------------------------------------------------------------------


def _fetch_model_arguments(parser: argparse.ArgumentParser) -> None:
    known = ", ".join(entry.language for entry in fetch.CATALOG)
    parser.add_argument("language", metavar="LANG", help=f"language tag; official models: {known}")
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="where to unpack the model (default: asr.models_dir of --config, else ./models)",
    )
    parser.add_argument("--config", type=Path, help="gateway configuration file to take models_dir from")
    parser.add_argument("--url", help="download this zipped Vosk model instead of the official one")
    parser.add_argument("--force", action="store_true", help="download again even if the model is there")


def _fetch_model(args: argparse.Namespace) -> int:
    language = args.language
    if not fetch.is_language_tag(language):
        raise CommandError(f'{language!r} is not a language tag such as "en-US"', EXIT_USAGE)
    url = args.url
    if url is None:
        entry = fetch.catalog_entry(language)
        if entry is None:
            known = ", ".join(entry.language for entry in fetch.CATALOG)
            raise CommandError(
                f"no official model known for {language} (known: {known}); give --url to fetch another",
                EXIT_USAGE,
            )
        language, url = entry.language, entry.url
    models_dir = args.models_dir or _configured_models_dir(args.config) or DEFAULT_MODELS_DIR
    try:
        fetched = fetch.fetch_model(
            url,
            models_dir,
            force=args.force,
            progress=fetch.DownloadProgress(url, sys.stderr.write),
        )
    except fetch.FetchError as e:
        raise CommandError(str(e)) from e
    state = "downloaded to" if fetched.downloaded else "already present (--force downloads it again):"
    print(f"{language}: {state} {fetched.path.absolute()}")
    print("\nTo use it, put this in the configuration:\n")
    print(fetch.config_snippet(language, fetched.path, Path.cwd()), end="")
    return 0


def _configured_models_dir(config: Path | None) -> Path | None:
    """
    C{asr.models_dir} of the configuration file C{config}, relative to the
    current directory like every path the gateway reads from it.

    Only this key is read: fetching a model must work with a configuration
    the gateway itself refuses because that very model is missing.
    """
    if config is None:
        return None
    try:
        with config.open("rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise CommandError(f"{config}: cannot read the configuration file: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise CommandError(f"{config}: invalid TOML: {e}") from e
    asr = document.get("asr", {})
    models_dir = asr.get("models_dir") if isinstance(asr, dict) else None
    if models_dir is None:
        return None
    if not isinstance(models_dir, str) or not models_dir:
        raise CommandError(f"{config}: asr.models_dir: expected a directory path, got {models_dir!r}")
    return Path(models_dir)


# -- stream-file ------------------------------------------------------------------


def _stream_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wav", type=Path, metavar="FILE", help="an 8 kHz mono 16-bit WAV file")
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the gateway's base URL")
    parser.add_argument("--api-id", default="demo", help="an [[auth.apps]] api_id")
    parser.add_argument("--api-secret", default="demo-secret", help="its api_secret")
    parser.add_argument("--external-id", default="", help="the conversation's externalId (default: the file name)")
    parser.add_argument("--role", choices=("customer", "agent"), default="customer")
    parser.add_argument("--sender-id", default="sender-1", help="sender.externalId")
    parser.add_argument("--language", help="startStream language (default: the gateway's default)")
    parser.add_argument("--realtime", action="store_true", help="send the audio in real time")


def _stream_file(args: argparse.Namespace) -> int:
    from mgateway.stream_file import StreamFileError, StreamOptions, stream_file

    options = StreamOptions(
        api=args.api, api_id=args.api_id, api_secret=args.api_secret,
        external_id=args.external_id or args.wav.stem, role=args.role, sender_id=args.sender_id,
        language=args.language, realtime=args.realtime,
    )
    final = _on_reactor(
        lambda reactor: stream_file(reactor, args.wav, options, lambda m: print(json.dumps(m), flush=True)),
        expected=(StreamFileError,),
    )
    if final is None:
        raise CommandError("the stream closed without a finalResponse")
    return 0 if final["status"]["code"] == "1000" else EXIT_FAILURE


# -- export -----------------------------------------------------------------------


def _day(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")
    parser.add_argument("--from", dest="first", type=_day, required=True, metavar="DATE",
                        help="first day to build (UTC, YYYY-MM-DD)")
    parser.add_argument("--to", dest="last", type=_day, metavar="DATE",
                        help="last day to build, included (default: --from)")


def _export(args: argparse.Namespace) -> int:
    from mgateway.config import ConfigError, load_config
    from mgateway.export.service import export_range

    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e)) from e
    last = args.last or args.first
    if last < args.first:
        raise CommandError(f"--to {last} is before --from {args.first}", EXIT_USAGE)
    written = _on_reactor(lambda reactor: export_range(config, reactor, args.first, last))
    for path in written:
        print(path)
    print(f"{len(written)} files for {args.first} to {last} in {config.exporter.directory}", file=sys.stderr)
    return 0


COMMANDS: tuple[Command, ...] = (
    Command(
        name="fetch-model",
        help="download an official Vosk model (or the one at --url) into the models directory",
        add_arguments=_fetch_model_arguments,
        run=_fetch_model,
    ),
    Command(
        name="stream-file",
        help="stream a WAV file through the direct WebSocket API and print what comes back",
        add_arguments=_stream_file_arguments,
        run=_stream_file,
    ),
    Command(
        name="export",
        help="build the File Exporter's utterances feed of a day or a range of days now",
        add_arguments=_export_arguments,
        run=_export,
    ),
)
