"""When things run: schedule specs (`{every: D}` or cron), cron arithmetic in a time zone."""
