"""What computes the model: the Encoder interface, torch, the runtime plugins, the "auto" rule."""
