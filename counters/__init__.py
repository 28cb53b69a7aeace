"""Per-op counting rules, one module per op family.

Each module is a plugin: it declares counters and shape rules with the
decorators of :mod:`micronet.registry` and returns them from its
``micronet_register_counters`` hook. Counters are pure functions of shapes
and hyper-parameters; they never see a tensor's data.
"""
