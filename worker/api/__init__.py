"""The internal API (separate port, bearer token): one module of routes per resource."""
