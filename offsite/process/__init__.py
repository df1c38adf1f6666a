"""Child processes: the one place commands start, the reaper that ends leftovers, stop signals, bounded logs."""
