"""HTTP routes: thin functions over the service modules."""
