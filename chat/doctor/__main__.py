"""Find out why the app does not answer: one line per check, each failure with its fix.

    python -m chat.doctor                        # the configuration: this environment, else azd's
    python -m chat.doctor --url https://<app>    # a deployed app: health, page, auth mode, streaming
    python -m chat.doctor --url https://<app> --origin https://page.example --key <function key>

Exit code 0 when every check passes, 1 when one fails. Warnings (an anonymous deployment, a
missing optional setting, a check that needs credentials) print but fail only with --strict.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chat.doctor.configuration import check_configuration
from chat.doctor.deployment import check_deployment
from chat.doctor.environment import Source, load_configuration
from chat.doctor.report import exit_code, print_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat.doctor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="check the app deployed at this URL instead of the configuration")
    parser.add_argument("--origin", help="with --url: the origin of a page on another site (CORS preflight)")
    parser.add_argument("--key", help="with --url: a function key, for an app in keys mode")
    parser.add_argument("--token", help="with --url: an Entra access token for the app, for an app in entra mode")
    parser.add_argument(
        "--source",
        choices=["auto", "environment", "azd"],
        default="auto",
        help="where the configuration comes from; auto: the environment, or azd's when it sets no Azure endpoint",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    args = parser.parse_args(argv)

    if args.url:
        checks = asyncio.run(check_deployment(args.url, origin=args.origin, key=args.key, token=args.token))
    else:
        source: Source = args.source
        checks = asyncio.run(check_configuration(load_configuration(source)))
    print_checks(checks)
    return exit_code(checks, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
