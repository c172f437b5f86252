"""Video and text towers; `milnce.towers.registry` builds them from config."""
