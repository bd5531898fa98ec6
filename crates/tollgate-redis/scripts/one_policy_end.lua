return { allowed and 1 or 0, remaining, reset, retry }
