"""Genomes, populations and the statistics that decide whether a champion is real."""
