"""What the ``scardio`` commands do (:mod:`scardio.cli` parses the command
line): one module per family of commands, each imported only when one of
its commands runs, so that ``scardio --help`` loads none of them."""
