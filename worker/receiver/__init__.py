"""The public webhook receiver: verify, store in the inbox, enqueue, then answer."""
