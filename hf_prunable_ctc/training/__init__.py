"""Training: the `Trainer` subclass that evaluates every depth, checkpoint resumption and JSON recipes."""
