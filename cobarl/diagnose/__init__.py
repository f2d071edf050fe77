"""``cobarl diagnose``: where a model and its data sit on the regime map (pass rates at k samples,
the reachable share of the 0/k prompts, the nearest measured regime)."""
