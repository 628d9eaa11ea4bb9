"""Services: long-lived programs on providers, each instance driven through its lifecycle by a cluster."""
