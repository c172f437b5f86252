"""The `milnce` command's verbs: one module per verb, each with an argparse-style `main(argv=None)` returning the
exit code (None: 0). tools/<verb>.py is a shim over the same `main`; see milnce/cli.py for the dispatcher."""
