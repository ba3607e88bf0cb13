"""The Where2Place `evaluate` metric, laid out as a Hub Space."""
