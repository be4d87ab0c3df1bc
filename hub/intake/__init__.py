"""What every inbound connector shares: request models, rules across fields, dedupe keys."""
