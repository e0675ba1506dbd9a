"""Tools that are not part of the app: load generators and the like."""
