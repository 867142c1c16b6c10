"""Writing folders for the Hub: safe output folders, model cards, publishing."""
