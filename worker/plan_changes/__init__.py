"""Plan changes in the shell: their store, requests and firing."""
