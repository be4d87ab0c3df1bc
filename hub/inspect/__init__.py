"""Looking into the event log as a person (or a test) would."""
