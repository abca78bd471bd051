"""What every layer shares: the one typed settings object, the errors module, structured logging."""
