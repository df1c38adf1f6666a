"""The `offsite` command: the parser and one module per group of commands (the only library package that reaches `tasks`/`workers`)."""
