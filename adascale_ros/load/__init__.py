"""Load generation: real stress-ng load, scripted load traces, and recorded load."""
