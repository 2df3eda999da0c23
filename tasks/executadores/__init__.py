"""Executadores (executors): each module declares one ``@executador`` for one action."""
