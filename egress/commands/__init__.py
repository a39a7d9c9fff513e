"""One module per `egress` subcommand; each has `add_arguments(parser)` and `run(args) -> int`."""
