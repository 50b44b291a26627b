"""Drop-in replacements for other libraries' layers (re-exported as genfast.<name>)."""
