"""What every service process shares: lifecycle, sd_notify, watchdog and logging."""
