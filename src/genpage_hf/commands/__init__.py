"""The `genpage` subcommands: `base` holds the command type, the parser and the error-handling runner;
every other module holds the argument dataclasses and run functions of a few commands (`COMMANDS`).

The console script is `genpage_cli.main`, a module outside the package, so `genpage --help` lists the
commands without importing torch. Feature modules never import this package.
"""
