"""Job kinds, one module each: declared parameters, plan, run (at nodes), finish (at the
coordinator), and a typed result. The registry lists them; see :mod:`.base`."""
