"""The only door to arq: every job name and every enqueue."""
