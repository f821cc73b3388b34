"""The unit of work for inbox events, its group commit, and what follows a commit."""
