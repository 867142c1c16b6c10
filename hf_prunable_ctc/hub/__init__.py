"""Writing folders for the Hub: safe output folders, pruned folders that work on their own, cards, publishing."""

from .pruned_folder import save_pruned

__all__ = ["save_pruned"]
