"""Lightning shells over the plain models: pre-training modules, schedules, callbacks and the CLI."""
