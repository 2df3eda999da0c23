"""Escavadores (collectors): each module declares one ``@escavador`` for one source."""
