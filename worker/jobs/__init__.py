"""arq job functions (events, plan changes, dunning, operations) and the worker built on them."""
