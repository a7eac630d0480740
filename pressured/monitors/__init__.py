"""Monitors: what tells the controller that memory is short (PSI triggers, availability)."""
